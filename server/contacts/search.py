"""Which contacts a search means: the one predicate for `q` and `tag`, newest first by id.

The contact list, its export, campaign audiences and bulk actions all select through here, so a
search names the same contacts everywhere, on SQLite and on PostgreSQL.

`q` of three characters or more is a case-insensitive substring of the name, the email, the phone
or any extra identity (`contact_identity`, stored lower-cased or E.164). On PostgreSQL every arm of
that OR has a pg_trgm GIN index (migration 0004) and the identity arm is an `id = ANY(ARRAY(…))`
over the primary key, so the planner may answer "newest 50 matching" either way: walk the primary
key backwards filtering rows (a common term: the first 50 come quickly), or OR the index bitmaps and
sort the few matches (a rare term). An `EXISTS` or `IN (subquery)` arm would rule the bitmap out and
leave only the walk, which reads the whole table for a term that matches nothing.

A shorter `q` has no trigram to look up, so a substring of it could only be found by that walk (a
scan of every contact when the term is rare: 823 ms at 1M). It matches as a prefix instead
(decision 78): of the name or a word in it (after a space), of the email, of the phone with or
without the term's `+` (`44` finds +44…), of an identity (a phone one likewise). Each arm has an
index again: a word's start is what pg_trgm pads a word with ("  q", " qz"), so 0004's name index
serves `'qz%'` and `'% qz%'`; email, phone and identity prefixes have btree `text_pattern_ops`
indexes (migration 0014) — their trigrams would also match every `.test`/`+1` word inside them.

Punctuation: pg_trgm splits words at anything that is not a letter or a digit, so `linus.t` looked
up the trigrams of `linus` and `t` and rechecked every Linus (20,000 rows, 250 ms at 1M). The name,
email and identity trigram indexes are therefore built over the text with `.@+-_` mapped to `q`
(`translate(…)`, migration 0016), and each arm asks that expression for the term mapped the same way
(`linusqt`: its `usq`, `sqt` find the few candidates, 4 ms), AND, when the term holds punctuation or
a `q`, the column for the term itself, which keeps the answer exact when a real `q` meets a mapped
dot (for any other term the mapped test is the same test). SQLite asks the column alone.

`tag` is `tags @> '["tag"]'` on PostgreSQL (GIN, jsonb_path_ops); `json_each` on SQLite.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, any_, bindparam, cast, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import QueryableAttribute

from server.contacts.models import AS_LETTER, PUNCTUATION, Contact, ContactIdentity, words_text
from server.db import json_array_contains

SHORT_TERM = 3  # characters: a shorter `q` has no trigram of its own and matches as a prefix
_AS_LETTER = str.maketrans(PUNCTUATION, AS_LETTER)
_MAPPED = frozenset(PUNCTUATION + AS_LETTER)  # a term holding one of these needs the column's own test


def _like_literal(q: str) -> str:
    """`q` lower-cased for LIKE … ESCAPE '\\', with the user's `%`, `_` and `\\` taken literally."""
    return q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _planned_value(dialect: str, value: str) -> Any:
    """`value` as a bound parameter; on PostgreSQL written into the statement instead.

    asyncpg prepares statements, and after five runs PostgreSQL may keep a generic plan that
    cannot see the term: for `q` that plan walks the primary key, which reads every row when the
    term is rare (5.7 s at 1M contacts against 9 ms with the term in view). A literal makes each
    term its own statement, planned for that term. SQLAlchemy escapes it."""
    return bindparam(None, value, type_=String(), literal_execute=dialect == "postgresql")


def _matches_q(dialect: str, workspace_id: int, q: str) -> ColumnElement[bool]:
    def like(column: ColumnElement[Any] | QueryableAttribute[Any], pattern: str) -> ColumnElement[bool]:
        return column.like(_planned_value(dialect, pattern), escape="\\")

    exactness = bool(set(q.lower()) & _MAPPED)  # the term holds punctuation or a `q`

    def like_words(column: ColumnElement[Any] | QueryableAttribute[Any], pattern: str) -> ColumnElement[bool]:
        """`like`, through the punctuation-as-letter trigram index on PostgreSQL (see the module doc)."""
        if dialect != "postgresql":
            return like(column, pattern)
        mapped = like(words_text(column), pattern.translate(_AS_LETTER))
        # Without punctuation or a `q` in the term the two are the same test: ask one, so the
        # planner's estimate stays that of one condition (two look rarer than they are).
        return and_(mapped, like(column, pattern)) if exactness else mapped

    name, email, term = func.lower(Contact.name), func.lower(Contact.email), _like_literal(q)
    kind, value = ContactIdentity.kind, ContactIdentity.value  # stored lower-cased (emails) or E.164
    if len(q) >= SHORT_TERM:
        contains = f"%{term}%"
        arms = [like_words(name, contains), like_words(email, contains), like(Contact.phone, contains)]
        identity = like_words(value, contains)
    else:
        starts, phone_starts = f"{term}%", f"{term}%" if q.startswith("+") else f"+{term}%"
        arms = [
            like_words(name, starts),
            like_words(name, f"% {term}%"),
            like(email, starts),
            like(Contact.phone, phone_starts),
        ]
        identity = or_(
            and_(kind == "email", like(value, starts)), and_(kind == "phone", like(value, phone_starts))
        )
    identities = select(ContactIdentity.contact_id).where(
        ContactIdentity.workspace_id == workspace_id, identity
    )
    if dialect == "postgresql":
        # A pseudo-constant array (an InitPlan): index-usable, so it can join the BitmapOr.
        extra: ColumnElement[bool] = Contact.id == any_(func.array(identities.scalar_subquery()))
    else:
        extra = Contact.id.in_(identities)
    return or_(*arms, extra)


def contact_filter(
    dialect: str, *, workspace_id: int, q: str | None, tag: str | None
) -> list[ColumnElement[bool]]:
    """The WHERE clauses selecting a workspace's contacts matching `q` and `tag` (both optional)."""
    clauses: list[ColumnElement[bool]] = [Contact.workspace_id == workspace_id]
    if q:
        clauses.append(_matches_q(dialect, workspace_id, q))
    if tag and dialect == "postgresql":
        # tags @> '["tag"]' (GIN, jsonb_path_ops), the array in view of the planner as for q
        clauses.append(Contact.tags.op("@>")(cast(_planned_value(dialect, json.dumps([tag])), JSONB)))
    elif tag:
        clauses.append(json_array_contains(dialect, Contact.tags, tag))
    return clauses


def list_query(
    dialect: str,
    *,
    workspace_id: int,
    q: str | None,
    tag: str | None,
    before_id: int | None,
    columns: tuple[Any, ...] = (Contact,),
) -> Select[Any]:
    """Matching contacts (or `columns` of them), newest first, older than `before_id` (the cursor)."""
    stmt = select(*columns).where(*contact_filter(dialect, workspace_id=workspace_id, q=q, tag=tag))
    if before_id is not None:
        stmt = stmt.where(Contact.id < before_id)
    return stmt.order_by(Contact.id.desc())

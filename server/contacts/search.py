"""Which contacts a search means: the one predicate for `q` and `tag`, newest first by id.

The contact list, its export, campaign audiences and bulk actions all select through here, so a
search names the same contacts everywhere, on SQLite and on PostgreSQL.

`q` is a case-insensitive substring of the name, the email, the phone or any extra identity
(`contact_identity`, stored lower-cased or E.164). On PostgreSQL every arm of that OR has a
pg_trgm GIN index (migration 0004) and the identity arm is an `id = ANY(ARRAY(…))` over the
primary key, so the planner may answer "newest 50 matching" either way: walk the primary key
backwards filtering rows (a common term: the first 50 come quickly), or OR the trigram bitmaps and
sort the few matches (a rare term). An `EXISTS` or `IN (subquery)` arm would rule the bitmap out and
leave only the walk, which reads the whole table for a term that matches nothing. Terms shorter
than three characters have no trigrams: they always walk (fast when common, a scan when rare).

`tag` is `tags @> '["tag"]'` on PostgreSQL (GIN, jsonb_path_ops); `json_each` on SQLite.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Select, String, any_, bindparam, cast, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB

from server.contacts.models import Contact, ContactIdentity
from server.db import json_array_contains


def like_pattern(q: str) -> str:
    """`%q%` for LIKE … ESCAPE '\\', lower-cased, with the user's `%`, `_` and `\\` taken literally."""
    return "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _planned_value(dialect: str, value: str) -> Any:
    """`value` as a bound parameter; on PostgreSQL written into the statement instead.

    asyncpg prepares statements, and after five runs PostgreSQL may keep a generic plan that
    cannot see the term: for `q` that plan walks the primary key, which reads every row when the
    term is rare (5.7 s at 1M contacts against 9 ms with the term in view). A literal makes each
    term its own statement, planned for that term. SQLAlchemy escapes it."""
    return bindparam(None, value, type_=String(), literal_execute=dialect == "postgresql")


def _matches_q(dialect: str, workspace_id: int, q: str) -> ColumnElement[bool]:
    like = _planned_value(dialect, like_pattern(q))
    identities = select(ContactIdentity.contact_id).where(
        ContactIdentity.workspace_id == workspace_id,
        ContactIdentity.value.like(like, escape="\\"),  # stored lower-cased (emails) or E.164
    )
    if dialect == "postgresql":
        # A pseudo-constant array (an InitPlan): index-usable, so it can join the BitmapOr.
        extra: ColumnElement[bool] = Contact.id == any_(func.array(identities.scalar_subquery()))
    else:
        extra = Contact.id.in_(identities)
    return or_(
        func.lower(Contact.name).like(like, escape="\\"),
        func.lower(Contact.email).like(like, escape="\\"),
        Contact.phone.like(like, escape="\\"),
        extra,
    )


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

"""The search predicate (`q`, `tag`) names the same contacts on SQLite and PostgreSQL: both are
checked against one Python reading of the rule, on the same data. A `q` under three characters
matches as a prefix (decision 78), wherever the search is used, and PostgreSQL answers it from
indexes."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.auth import service as auth_service
from server.contacts.models import Contact, ContactIdentity
from server.contacts.search import list_query
from server.db import Database, utcnow
from server.messages.models import Message
from tests.conftest import ClientFactory
from tests.messages.support import template

PEOPLE: list[dict[str, Any]] = [
    {"name": "Ada Lovelace", "email": "ada@analytical.test", "phone": "+442079460958", "tags": ["vip"]},
    {"name": "Grace Hopper", "email": "grace@navy.test", "phone": "+12025550173", "tags": ["navy", "vip"]},
    {"name": "Alan Turing", "email": "alan@bletchley.test", "phone": None, "tags": []},
    {"name": "100% Pure", "email": "pure_joy@soap.test", "phone": "+14155552671", "tags": ["50%"]},
    {"name": "Back\\slash", "email": None, "phone": "+14155550000", "tags": ["a_b"]},
    {"name": "ÉMILE Zola", "email": "emile@paris.test", "phone": None, "tags": ["vip"]},
    {"name": "", "email": "anon@nowhere.test", "phone": "+33142685300", "tags": ["navy"]},
    {"name": "Miles O'Brien", "email": "obrien@ds9.test", "phone": None, "tags": ["it's"]},
    {"name": "Linus Torvalds", "email": "linus@kernel.test", "phone": "+358401234567", "tags": ["vip"]},
    # a real `q` where others have punctuation (the trigram indexes read `.@+-_` as `q`)
    {"name": "Jacques Q-Tip", "email": "linusqt@quill.test", "phone": None, "tags": []},
]
# extra identities (merges leave them): lower-cased emails and E.164 phones
EXTRA = {
    "Alan Turing": ["enigma@hut8.test", "+441908640404"],
    "Linus Torvalds": ["old_linus@kernel.test", "linus.t@former.test"],
}

QUERIES = [
    "ada", "ADA", "a", "an", "ov", "lovelace", "navy.test", "@", ".test", "202555", "+1415", "+44",
    "enigma", "HUT8", "640404", "old_linus", "%", "100%", "_", "pure_joy", "pure%joy", "\\", "back\\s",
    "o'bri", "'", "zzz", "zola", "nowhere", "  ", "o", "kernel", "+",
    "lo", "zo", "gr", "ra", "44", "+4", "1", "en", "ol", "o'", "ad", "nu", "a%", "p_",
    "linus.t", "linusqt", "linus_t", "s.q", "q-t", "qqq", "q.", "qt@", "s q", "ques q-",
]  # fmt: skip


def _matches(p: dict[str, Any], q: str) -> bool:
    """The rule in plain Python. Three characters or more: a case-insensitive substring of the name,
    email, phone or an extra identity. Fewer: a prefix of the name or of a word in it (after a
    space), of the email or an extra email, of the phone or an extra phone with its `+` optional."""
    term, name, email = q.lower(), p["name"].lower(), (p["email"] or "").lower()
    extra = EXTRA.get(p["name"], [])
    if len(q) >= 3:
        return any(term in f for f in [name, email, p["phone"] or "", *extra])
    phones = [v for v in [p["phone"] or "", *extra] if v.startswith("+")]
    emails = [v for v in [email, *extra] if v and not v.startswith("+")]
    dialled = term if term.startswith("+") else "+" + term
    return (
        name.startswith(term)
        or f" {term}" in name
        or any(e.startswith(term) for e in emails)
        or any(n.startswith(dialled) for n in phones)
    )


def _reference(people: list[dict[str, Any]], q: str | None, tag: str | None) -> list[str]:
    out = []
    for p in people:
        if q and not _matches(p, q):
            continue
        if tag and tag not in p["tags"]:
            continue
        out.append(p["name"])
    return out[::-1]  # newest first


async def _seed(db: Database, workspace: str, people: list[dict[str, Any]]) -> int:
    now = utcnow()
    async with db.transaction() as s:
        ws = (await auth_service.get_or_create_workspace(s, name=workspace)).id
        for p in people:
            contact = Contact(workspace_id=ws, attributes={}, version=1, created_at=now, updated_at=now, **p)
            s.add(contact)
            await s.flush()
            for value in EXTRA.get(p["name"], []):
                kind = "phone" if value.startswith("+") else "email"
                s.add(ContactIdentity(workspace_id=ws, contact_id=contact.id, kind=kind, value=value))
    return ws


async def _names(
    db: Database, ws: int, q: str | None, tag: str | None, before_id: int | None = None
) -> list[str]:
    async with db.transaction() as s:
        stmt = list_query(db.dialect, workspace_id=ws, q=q, tag=tag, before_id=before_id)
        return [c.name for c in (await s.execute(stmt)).scalars()]


async def test_q_and_tag_select_what_the_rule_says_on_either_database(db: Database) -> None:
    ws = await _seed(db, "Acme", PEOPLE)
    # The same names in another workspace never leak into Acme's results.
    await _seed(db, "Other", [{**p, "name": p["name"] + " (other)"} for p in PEOPLE])
    for q in QUERIES:
        assert await _names(db, ws, q, None) == _reference(PEOPLE, q, None), q
    for tag in ["vip", "navy", "50%", "a_b", "a", "none", "it's"]:
        assert await _names(db, ws, None, tag) == _reference(PEOPLE, None, tag), tag
    for q, tag in [("a", "vip"), (".test", "navy"), ("enigma", "vip"), ("old_linus", "vip")]:
        assert await _names(db, ws, q, tag) == _reference(PEOPLE, q, tag), (q, tag)


async def test_a_term_under_three_characters_matches_a_prefix_not_inside_a_word(db: Database) -> None:
    ws = await _seed(db, "Acme", PEOPLE)
    assert await _names(db, ws, "lo", None) == ["Ada Lovelace"]  # a later word of the name
    assert await _names(db, ws, "ov", None) == []  # inside "Lovelace"
    assert await _names(db, ws, "ove", None) == ["Ada Lovelace"]  # three characters: a substring again
    assert await _names(db, ws, "ra", None) == []  # inside "Grace"
    assert await _names(db, ws, "ace", None) == ["Grace Hopper", "Ada Lovelace"]
    assert await _names(db, ws, "an", None) == [""]  # anon@…; not "analytical" after the @, nor "Alan"
    assert await _names(db, ws, "ana", None) == ["Ada Lovelace"]  # ada@analytical.test
    assert await _names(db, ws, "44", None) == ["Alan Turing", "Ada Lovelace"]  # +44…, an extra phone too
    assert await _names(db, ws, "+4", None) == ["Alan Turing", "Ada Lovelace"]
    assert await _names(db, ws, "20", None) == []  # inside +12025550173
    assert await _names(db, ws, "en", None) == ["Alan Turing"]  # an extra email
    assert await _names(db, ws, "hu", None) == []  # inside it


async def test_cursor_continues_a_search_where_the_page_ended(db: Database) -> None:
    ws = await _seed(db, "Acme", PEOPLE)
    everyone = await _names(db, ws, ".test", None)
    async with db.transaction() as s:
        ids = [
            c.id
            for c in (
                await s.execute(list_query(db.dialect, workspace_id=ws, q=".test", tag=None, before_id=None))
            ).scalars()
        ]
    assert await _names(db, ws, ".test", None, before_id=ids[2]) == everyone[3:]


async def test_api_search_finds_a_contact_by_an_extra_identity(
    make_client: ClientFactory, db: Database
) -> None:
    client: httpx.AsyncClient = await make_client("viewer", workspace="Acme")
    await _seed(db, "Acme", PEOPLE)
    r = await client.get("/api/v1/contacts", params={"q": "Enigma@HUT8"})
    assert r.status_code == 200
    assert [c["name"] for c in r.json()["items"]] == ["Alan Turing"]


async def test_a_short_term_selects_the_same_contacts_to_list_export_tag_and_message(
    make_client: ClientFactory, db: Database
) -> None:
    """Every use of the search takes the one predicate: "an" names anon@… only, where a substring
    would also name Alan Turing and ada@analytical.test."""
    agent = await make_client("agent", workspace="Acme")
    await _seed(db, "Acme", PEOPLE)

    listed = (await agent.get("/api/v1/contacts", params={"q": "an"})).json()["items"]
    assert [c["email"] for c in listed] == ["anon@nowhere.test"]
    r = await agent.get("/api/v1/contacts/export", params={"q": "an", "format": "ndjson"})
    assert r.status_code == 200
    assert [json.loads(line)["email"] for line in r.text.splitlines()] == ["anon@nowhere.test"]
    r = await agent.post("/api/v1/contacts/bulk", json={"filter": {"q": "an"}, "action": "tag", "tag": "t"})
    assert r.status_code == 202 and r.json()["total"] == 1, r.text
    tpl = await template(agent)
    r = await agent.post(
        "/api/v1/campaigns", json={"name": "An", "template_id": tpl["id"], "audience": {"q": "an"}}
    )
    assert r.status_code == 202, r.text
    async with asyncio.timeout(30):
        while (c := (await agent.get(f"/api/v1/campaigns/{r.json()['id']}")).json())["status"] == "expanding":
            await asyncio.sleep(0.05)
    async with db.transaction() as s:
        sent = await s.scalars(select(Message.to_address).where(Message.campaign_id == c["id"]))
        assert list(sent) == ["anon@nowhere.test"]


def _driver_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v  # JSONB parameters go as text


async def _plan(conn: AsyncConnection, stmt: Select[Any]) -> str:
    """PostgreSQL's plan for `stmt` as the application sends it (terms written into the text)."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    values = tuple(_driver_value(compiled.params[k]) for k in compiled.positiontup or ())
    rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", values)
    return "\n".join(r[0] for r in rows)


async def test_postgresql_can_answer_q_and_tag_from_the_gin_indexes(pg_url: str) -> None:
    db = Database(pg_url)
    plans: dict[str, str] = {}
    try:
        ws = await _seed(db, "Acme", PEOPLE)
        async with db.engine.connect() as conn:
            trans = await conn.begin()
            # At test sizes the workspace's btree indexes win; drop them (rolled back below) and
            # forbid scans, so the plan shows whether the predicate can be served by the GIN indexes.
            for sql in (
                "DROP INDEX ix_contact_workspace_phone, uq_contact_workspace_lower_email, ix_contact_workspace_id_id,"
                " ix_contact_lower_email_prefix, ix_contact_phone_prefix, ix_contact_identity_value_prefix",
                "ALTER TABLE contact_identity DROP CONSTRAINT uq_contact_identity_workspace_id_kind_value",
                "SET LOCAL enable_seqscan = off",
                "SET LOCAL enable_indexscan = off",
            ):
                await conn.exec_driver_sql(sql)
            for name, q, tag in [
                ("q", "lovelace", None),
                ("q punctuated", "ada.l", None),
                ("tag", None, "navy"),
            ]:
                stmt = list_query("postgresql", workspace_id=ws, q=q, tag=tag, before_id=None).limit(51)
                plans[name] = await _plan(conn, stmt)
            await trans.rollback()
    finally:
        await db.dispose()
    for q in ("q", "q punctuated"):
        for ix in (
            "ix_contact_name_words_trgm",  # punctuation read as a letter (migration 0016)
            "ix_contact_email_words_trgm",
            "ix_contact_phone_trgm",
            "ix_contact_identity_words_trgm",
            "pk_contact",  # the identity arm joins the BitmapOr through the primary key
        ):
            assert ix in plans[q], plans[q]
        assert "BitmapOr" in plans[q], plans[q]
    assert "ix_contact_tags" in plans["tag"], plans["tag"]


# 20,000 contacts (enough for the planner to prefer indexes to a scan) and 400 extra emails,
# generated by PostgreSQL in one statement each: about a second.
_MANY_CONTACTS = """
INSERT INTO contact (workspace_id, name, email, phone, attributes, tags, version, created_at, updated_at)
SELECT $1, 'Person ' || g, 'p' || g || '@bulk.test', '+1555' || lpad(g::text, 7, '0'), '{}', '[]', 1, now(), now()
FROM generate_series(1, 20000) AS g
"""
_MANY_IDENTITIES = """
INSERT INTO contact_identity (workspace_id, contact_id, kind, value)
SELECT workspace_id, id, 'email', 'old' || id || '@former.test' FROM contact WHERE workspace_id = $1 AND id % 50 = 0
"""


async def test_postgresql_answers_a_rare_short_term_from_indexes_not_a_scan(pg_url: str) -> None:
    """A term under three characters has no trigram; as a substring it could only be found by
    reading every contact (823 ms at 1M). As a prefix each arm of the OR has an index."""
    db = Database(pg_url)
    plans: dict[str, str] = {}
    try:
        async with db.transaction() as s:
            ws = (await auth_service.get_or_create_workspace(s, name="Many")).id
        async with db.engine.connect() as conn:
            for sql in (_MANY_CONTACTS, _MANY_IDENTITIES):
                await conn.exec_driver_sql(sql, (ws,))
            await conn.exec_driver_sql("ANALYZE contact")
            await conn.exec_driver_sql("ANALYZE contact_identity")
            await conn.commit()
            for q in ("qz", "q", "+9", "zx"):
                stmt = list_query("postgresql", workspace_id=ws, q=q, tag=None, before_id=None).limit(51)
                plans[q] = await _plan(conn, stmt)
    finally:
        await db.dispose()
    for q, plan in plans.items():
        assert not re.search(r"Seq Scan on contact\b", plan), (q, plan)
        assert "Index Scan Backward using pk_contact" not in plan, (q, plan)  # the walk, as bad when rare
        assert "BitmapOr" in plan, (q, plan)
        for ix in (
            "ix_contact_name_words_trgm",  # a word's start: pg_trgm pads each word with spaces
            "ix_contact_lower_email_prefix",
            "ix_contact_phone_prefix",
            "ix_contact_identity_value_prefix",
        ):
            assert ix in plan, (q, ix, plan)


async def test_postgresql_plans_each_search_term_for_itself() -> None:
    """Not one generic plan for every term (a prepared statement's, after five runs): that plan
    walks the whole table for a rare term. The term and the tag are in the statement's text."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

    def sql(q: str, tag: str) -> str:
        stmt = list_query("postgresql", workspace_id=1, q=q, tag=tag, before_id=None)
        return str(stmt.compile(dialect=asyncpg_dialect(), compile_kwargs={"render_postcompile": True}))

    one, other = sql("rare.term@example.test", "vip"), sql("common", "newsletter")
    assert one != other
    assert "'%rare.term@example.test%'" in one
    assert "'[\"vip\"]'" in one
    assert "'%o''brien%'" in sql("O'Brien", "x")  # quoted by SQLAlchemy, as the data test runs it
    short = sql("O'", "x")  # a short term is written in as well, as prefixes
    assert all(p in short for p in ("'o''%'", "'% o''%'", "'+o''%'")), short


async def _filler(db: Database, ws: int, n: int) -> None:
    now = utcnow()
    async with db.transaction() as s:
        await s.execute(
            insert(Contact),
            [
                {"workspace_id": ws, "name": f"Person {i}", "email": f"p{i}@bulk.test", "phone": None,
                 "attributes": {}, "tags": ["even"] if i % 2 == 0 else [], "version": 1,
                 "created_at": now, "updated_at": now}
                for i in range(n)
            ],
        )  # fmt: skip


async def test_bulk_rows_inserted_set_wise_are_searchable(db: Database) -> None:
    """The benchmark builds contacts with INSERT … SELECT; the search needs nothing else."""
    async with db.transaction() as s:
        ws = (await auth_service.get_or_create_workspace(s, name="Bulk")).id
    await _filler(db, ws, 300)
    assert len(await _names(db, ws, "p1", None)) == 1 + 10 + 100  # p1, p10..p19, p100..p199
    assert len(await _names(db, ws, "p1", "even")) == (1 + 10 + 100 - 1) // 2

"""The search predicate (`q`, `tag`) names the same contacts on SQLite and PostgreSQL: both are
checked against one Python reading of the rule, on the same data."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import insert

from server.auth import service as auth_service
from server.contacts.models import Contact, ContactIdentity
from server.contacts.search import list_query
from server.db import Database, utcnow
from tests.conftest import ClientFactory

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
]
# extra identities (merges leave them): lower-cased emails and E.164 phones
EXTRA = {"Alan Turing": ["enigma@hut8.test", "+441908640404"], "Linus Torvalds": ["old_linus@kernel.test"]}

QUERIES = [
    "ada", "ADA", "a", "an", "ov", "lovelace", "navy.test", "@", ".test", "202555", "+1415", "+44",
    "enigma", "HUT8", "640404", "old_linus", "%", "100%", "_", "pure_joy", "pure%joy", "\\", "back\\s",
    "o'bri", "'", "zzz", "zola", "nowhere", "  ", "o", "kernel", "+",
]  # fmt: skip


def _reference(people: list[dict[str, Any]], q: str | None, tag: str | None) -> list[str]:
    """The rule in plain Python: a case-insensitive substring of name, email, phone or an identity."""
    out = []
    for p in people:
        fields = [p["name"].lower(), (p["email"] or "").lower(), p["phone"] or "", *EXTRA.get(p["name"], [])]
        if q and not any(q.lower() in f for f in fields):
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


def _driver_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v  # JSONB parameters go as text


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
                "DROP INDEX ix_contact_workspace_phone, uq_contact_workspace_lower_email, ix_contact_workspace_id_id",
                "ALTER TABLE contact_identity DROP CONSTRAINT uq_contact_identity_workspace_id_kind_value",
                "SET LOCAL enable_seqscan = off",
                "SET LOCAL enable_indexscan = off",
            ):
                await conn.exec_driver_sql(sql)
            for name, q, tag in [("q", "lovelace", None), ("tag", None, "navy")]:
                stmt = list_query("postgresql", workspace_id=ws, q=q, tag=tag, before_id=None).limit(51)
                compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
                values = tuple(_driver_value(compiled.params[k]) for k in compiled.positiontup or ())
                rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", values)
                plans[name] = "\n".join(r[0] for r in rows)
            await trans.rollback()
    finally:
        await db.dispose()
    for ix in (
        "ix_contact_lower_name_trgm",
        "ix_contact_lower_email_trgm",
        "ix_contact_phone_trgm",
        "ix_contact_identity_value_trgm",
        "pk_contact",  # the identity arm joins the BitmapOr through the primary key
    ):
        assert ix in plans["q"], plans["q"]
    assert "BitmapOr" in plans["q"], plans["q"]
    assert "ix_contact_tags" in plans["tag"], plans["tag"]


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

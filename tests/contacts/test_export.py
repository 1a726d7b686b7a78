"""Exports (DESIGN §11): contacts for a search, messages for a time range, streamed as CSV or NDJSON."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from typing import Any

import httpx
from sqlalchemy import insert

from server.auth import service as auth_service
from server.contacts.models import Contact
from server.db import Database, utcnow
from server.messages.models import Message
from tests.conftest import ClientFactory

HEADER = (
    "id,name,email,phone,tags,attributes,created_at,updated_at,email_consent,sms_consent,whatsapp_consent"
)


async def _create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/contacts", json=fields)
    assert r.status_code == 201, r.text
    return r.json()


def _csv(r: httpx.Response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(r.text)))


def _ndjson(r: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in r.text.splitlines()]


async def test_csv_cells_that_would_run_as_formulas_are_neutralised(make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    await _create(
        agent,
        name='=HYPERLINK("http://evil.test","click")',
        email="eq@example.test",
        phone="+1 415 555 2671",
        tags=["@vip", "-minus", "plain"],
        attributes={"note": "+SUM(A1)", "tab": "\tx"},
    )
    await _create(agent, name="@SUM(1+1)", email="at@example.test")
    await _create(agent, name="-2+3", email="minus@example.test")
    await _create(agent, name="\rcarriage", email="cr@example.test")
    await _create(agent, name='Plain, "quoted" name', email="plain@example.test")

    r = await agent.get("/api/v1/contacts/export", params={"format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="contacts-')
    assert r.text.splitlines()[0] == HEADER
    rows = {row["email"]: row for row in _csv(r)}
    assert rows["eq@example.test"]["name"] == '\'=HYPERLINK("http://evil.test","click")'
    assert rows["eq@example.test"]["phone"] == "'+14155552671"
    assert rows["eq@example.test"]["tags"] == "'@vip;-minus;plain"
    assert json.loads(rows["eq@example.test"]["attributes"]) == {"note": "+SUM(A1)", "tab": "\tx"}
    assert rows["at@example.test"]["name"] == "'@SUM(1+1)"
    assert rows["minus@example.test"]["name"] == "'-2+3"
    assert rows["cr@example.test"]["name"] == "'\rcarriage"
    assert rows["plain@example.test"]["name"] == 'Plain, "quoted" name'
    assert rows["plain@example.test"]["phone"] == ""

    # NDJSON is data, not a spreadsheet: values unchanged.
    r = await agent.get("/api/v1/contacts/export", params={"format": "ndjson"})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    items = {c["email"]: c for c in _ndjson(r)}
    assert items["eq@example.test"]["name"] == '=HYPERLINK("http://evil.test","click")'
    assert items["eq@example.test"]["tags"] == ["@vip", "-minus", "plain"]
    assert items["eq@example.test"]["phone"] == "+14155552671"


async def test_export_follows_q_and_tag_like_the_list(make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    for i in range(6):
        await _create(
            agent, name=f"Person {i}", email=f"p{i}@example.test", tags=["even" if i % 2 == 0 else "odd"]
        )
    await _create(agent, name="Grace Hopper", email="grace@navy.test", tags=["vip", "even"])

    for params in ({"q": "grace"}, {"tag": "even"}, {"q": "example", "tag": "odd"}, {"q": "nobody"}, {}):
        listed = (await agent.get("/api/v1/contacts", params={**params, "limit": 500})).json()["items"]
        for fmt in ("csv", "ndjson"):
            r = await agent.get("/api/v1/contacts/export", params={**params, "format": fmt})
            assert r.status_code == 200
            exported = _csv(r) if fmt == "csv" else _ndjson(r)
            assert [int(c["id"]) for c in exported] == [c["id"] for c in listed], (params, fmt)
    r = await agent.get("/api/v1/contacts/export", params={"q": "nobody"})
    assert r.text == HEADER + "\r\n"  # a header, no rows


async def test_export_is_for_agents_and_stays_in_the_workspace(make_client: ClientFactory) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    viewer = await make_client("viewer", workspace="Acme")
    await _create(acme, name="Acme person", email="a@acme.test")
    await _create(other, name="Other person", email="o@other.test")

    r = await viewer.get("/api/v1/contacts/export")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert (await viewer.get("/api/v1/messages/export")).status_code == 403
    assert [c["name"] for c in _ndjson(await other.get("/api/v1/contacts/export?format=ndjson"))] == [
        "Other person"
    ]
    assert [c["name"] for c in _csv(await acme.get("/api/v1/contacts/export"))] == ["Acme person"]
    r = await acme.get("/api/v1/contacts/export", params={"format": "xlsx"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "query.format"


async def _bulk_contacts(db: Database, workspace: str, n: int) -> int:
    async with db.transaction() as s:
        ws = (await auth_service.get_or_create_workspace(s, name=workspace)).id
        now = utcnow()
        rows = [
            {"workspace_id": ws, "name": f"Bulk {i}", "email": f"b{i}@bulk.test", "phone": None,
             "attributes": {"i": i}, "tags": ["bulk"], "version": 1, "created_at": now, "updated_at": now}
            for i in range(n)
        ]  # fmt: skip
        await s.execute(insert(Contact), rows)
    return ws


async def _asgi_get(app: Any, path: str, token: str) -> tuple[int, list[bytes]]:
    """GET through the whole ASGI stack, keeping each body message the app sends (httpx joins them)."""
    bodies: list[bytes] = []
    status = 0
    path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "root_path": "", "headers": [(b"host", b"testserver"), (b"authorization", token.encode())],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80), "state": {},
    }  # fmt: skip

    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if requested:  # the client stays connected until the response ends
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])

    await app(scope, receive, send)
    return status, bodies


async def test_thousands_of_contacts_stream_in_batches(
    make_client: ClientFactory, app: Any, db: Database
) -> None:
    agent = await make_client("agent", workspace="Bulk")
    await _bulk_contacts(db, "Bulk", 4500)
    await _bulk_contacts(db, "Elsewhere", 50)

    status, chunks = await _asgi_get(
        app, "/api/v1/contacts/export?format=csv", agent.headers["authorization"]
    )
    assert status == 200
    assert len(chunks) == 1 + 3  # the header, then one chunk per batch of 2,000 rows: 2000, 2000, 500
    assert max(c.count(b"\r\n") for c in chunks) == 2000
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 4500
    assert len({r["id"] for r in rows}) == 4500
    assert [int(r["id"]) for r in rows] == sorted((int(r["id"]) for r in rows), reverse=True)
    assert {r["tags"] for r in rows} == {"bulk"}

    status, chunks = await _asgi_get(
        app, "/api/v1/contacts/export?format=ndjson&q=b1", agent.headers["authorization"]
    )
    items = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert len(items) == 1 + 10 + 100 + 1000  # b1, b10..b19, b100..b199, b1000..b1999
    assert len(chunks) == 1


async def _messages(db: Database, ws: int, times: list[dt.datetime], subject: str = "Hi") -> None:
    async with db.transaction() as s:
        await s.execute(
            insert(Message),
            [
                {"workspace_id": ws, "channel": "email", "to_address": f"m{i}@example.test", "subject": subject,
                 "body": "=cmd|' /C calc'!A0", "variables": {}, "status": "sent", "send_at": t,
                 "next_attempt_at": t, "created_at": t, "updated_at": t}
                for i, t in enumerate(times)
            ],
        )  # fmt: skip


async def test_messages_export_covers_the_range_oldest_first(
    make_client: ClientFactory, app: Any, db: Database
) -> None:
    agent = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    async with db.transaction() as s:
        acme = (await auth_service.get_or_create_workspace(s, name="Acme")).id
        elsewhere = (await auth_service.get_or_create_workspace(s, name="Other")).id
    day = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    # 2,500 messages in the day, many sharing a timestamp (as a campaign's do), some outside it.
    inside = [day + dt.timedelta(seconds=i // 7) for i in range(2500)]
    await _messages(db, acme, [day - dt.timedelta(seconds=1), *inside, day + dt.timedelta(days=1)])
    await _messages(db, elsewhere, inside[:10], subject="theirs")

    params = "from=2026-11-02&to=2026-11-03T00:00:00Z&format=csv"
    status, chunks = await _asgi_get(app, f"/api/v1/messages/export?{params}", agent.headers["authorization"])
    assert status == 200
    assert len(chunks) == 1 + 2  # header, 2,000 rows, 500 rows
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 2500
    assert len({r["id"] for r in rows}) == 2500
    keys = [(r["created_at"], int(r["id"])) for r in rows]
    assert keys == sorted(keys)
    assert all(day.isoformat() <= r["created_at"] < (day + dt.timedelta(days=1)).isoformat() for r in rows)
    assert {r["subject"] for r in rows} == {"Hi"}
    assert rows[0]["body"] == "'=cmd|' /C calc'!A0"

    r = await other.get(
        "/api/v1/messages/export", params={"from": "2026-11-02", "to": "2026-11-03", "format": "ndjson"}
    )
    items = _ndjson(r)
    assert [m["subject"] for m in items] == ["theirs"] * 10
    assert items[0]["body"] == "=cmd|' /C calc'!A0"
    assert items[0]["created_at"].startswith("2026-11-02T00:00:00")

    r = await agent.get("/api/v1/messages/export", params={"from": "2026-11-03", "to": "2026-11-02"})
    assert r.status_code == 422


async def _rows_text(client: httpx.AsyncClient, what: str, fmt: str) -> str:
    """The export's bytes after the CSV header, decoded."""
    r = await client.get(f"/api/v1/{what}/export", params={"format": fmt})
    assert r.status_code == 200, r.text
    return r.content.decode().split("\r\n", 1)[1] if fmt == "csv" else r.content.decode()


async def _insert_contact(db: Database, workspace: str, **fields: Any) -> int:
    async with db.transaction() as s:
        ws = (await auth_service.get_or_create_workspace(s, name=workspace)).id
        row = {"workspace_id": ws, "name": "", "email": None, "phone": None, "attributes": {}, "tags": [],
               "version": 1, **fields}  # fmt: skip
        return int((await s.execute(insert(Contact).returning(Contact.id), [row])).scalar_one())


async def test_json_columns_and_times_are_written_byte_for_byte(
    make_client: ClientFactory, db: Database
) -> None:
    """Tags and attributes are read as JSON text (not decoded by the driver), times in one call per
    column: the export must still read exactly as before on both databases. Keys are given in
    jsonb's order (shorter first) so both databases keep them in this order."""
    agent = await make_client("agent")
    at = dt.datetime(2026, 11, 2, 9, 30, 5, 120, tzinfo=dt.UTC)
    whole_second = dt.datetime(2026, 11, 2, 9, 30, 6, tzinfo=dt.UTC)
    attributes = {"f": 1.1, "n": -3, "u": 'héllo ☃ "q"', "nest": {"a": [1, 2.5, None, True]}}
    cid = await _insert_contact(
        db, "Acme", name="Zoë", email="z@example.test", tags=["=eq", "ünï", "plain"],
        attributes=attributes, created_at=at, updated_at=whole_second,
    )  # fmt: skip
    assert await _rows_text(agent, "contacts", "csv") == (
        f"{cid},Zoë,z@example.test,,'=eq;ünï;plain,"
        '"{""f"":1.1,""n"":-3,""u"":""héllo ☃ \\""q\\"""",""nest"":{""a"":[1,2.5,null,true]}}",'
        "2026-11-02T09:30:05.000120+00:00,2026-11-02T09:30:06+00:00,,,\r\n"
    )
    assert await _rows_text(agent, "contacts", "ndjson") == (
        f'{{"id":{cid},"name":"Zoë","email":"z@example.test","phone":null,"tags":["=eq","ünï","plain"],'
        '"attributes":{"f":1.1,"n":-3,"u":"héllo ☃ \\"q\\"","nest":{"a":[1,2.5,null,true]}},'
        '"created_at":"2026-11-02T09:30:05.000120+00:00","updated_at":"2026-11-02T09:30:06+00:00",'
        '"consent":{"email":null,"sms":null,"whatsapp":null}}\n'
    )


async def test_message_rows_are_written_byte_for_byte(make_client: ClientFactory, db: Database) -> None:
    agent = await make_client("agent")
    async with db.transaction() as s:
        ws = (await auth_service.get_or_create_workspace(s, name="Acme")).id
    t = dt.datetime(2026, 11, 2, 8, 0, 0, 5, tzinfo=dt.UTC)
    async with db.transaction() as s:
        mid = (
            await s.execute(
                insert(Message).returning(Message.id),
                [{"workspace_id": ws, "channel": "sms", "to_address": "+14155552671", "subject": "",
                  "body": "@bob, -1 ünï\nline", "variables": {}, "status": "queued", "send_at": t,
                  "next_attempt_at": t, "created_at": t, "updated_at": t}],
            )
        ).scalar_one()  # fmt: skip
    assert await _rows_text(agent, "messages", "csv") == (
        f"{mid},,,sms,'+14155552671,queued,,,0,,,\"'@bob, -1 ünï\nline\","
        "2026-11-02T08:00:00.000005+00:00,,2026-11-02T08:00:00.000005+00:00,2026-11-02T08:00:00.000005+00:00\r\n"
    )
    assert await _rows_text(agent, "messages", "ndjson") == (
        f'{{"id":{mid},"contact_id":null,"campaign_id":null,"channel":"sms","to_address":"+14155552671",'
        '"status":"queued","provider_kind":null,"provider_message_id":null,"attempts":0,"reason":null,'
        '"subject":"","body":"@bob, -1 ünï\\nline","send_at":"2026-11-02T08:00:00.000005+00:00",'
        '"sent_at":null,"created_at":"2026-11-02T08:00:00.000005+00:00",'
        '"updated_at":"2026-11-02T08:00:00.000005+00:00"}\n'
    )

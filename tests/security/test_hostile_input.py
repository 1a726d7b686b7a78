"""Hostile input, one request per kind, on SQLite and PostgreSQL: every answer is a clear 4xx
problem naming what was wrong (never a 500 or a 503 that invites a retry), and nothing is lost."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import httpx
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select
from starlette.applications import Starlette

from server.api import Query, Schema, all_operations
from server.app import ROUTERS
from server.contacts.models import Contact
from server.db import Database
from server.messages.models import MessageEvent
from tests.conftest import ClientFactory
from tests.conversations.support import World as ConversationWorld
from tests.ui.conftest import BrowserFactory, csrf_field
from tests.ui.conftest import browser_client as browser_client
from tests.webhooks.payloads import mailgun_event_data
from tests.webhooks.test_api import World

HUGE = 2**70


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    body: dict[str, Any] = r.json()
    return body


def _fields(r: httpx.Response) -> list[str]:
    return [e["field"] for e in _problem(r, 422).get("errors", [])]


# --- NUL characters (items 4, issue 13) --------------------------------------------------------


async def test_nul_in_a_contact_field_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    assert _fields(await client.post("/api/v1/contacts", json={"name": "Ada\x00"})) == ["name"]
    r = await client.post("/api/v1/contacts", json={"name": "Ada", "attributes": {"plan": ["a\x00"]}})
    assert _fields(r) == ["attributes"]
    assert "plan" in r.json()["errors"][0]["message"]
    r = await client.post("/api/v1/contacts", json={"name": "Ada", "attributes": {"k\x00": 1}})
    assert _fields(r) == ["attributes"]
    assert _fields(await client.post("/api/v1/contacts", json={"tags": ["vip\x00"]})) == ["tags"]


async def test_nul_in_a_nested_body_field_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/campaigns", json={"name": "c", "template_id": 1, "audience": {"q": "a\x00"}}
    )
    assert _fields(r) == ["audience.q"]


async def test_nul_in_the_login_email_is_422(make_client: ClientFactory) -> None:
    anonymous = await make_client(role=None)
    r = await anonymous.post("/api/v1/auth/login", json={"email": "a\x00@x.test", "password": "p"})
    assert _fields(r) == ["email"]


async def test_nul_in_a_query_parameter_is_422_naming_it(client: httpx.AsyncClient) -> None:
    assert _fields(await client.get("/api/v1/contacts", params={"q": "a\x00"})) == ["query.q"]
    assert _fields(await client.get("/api/v1/contacts", params={"tag": "\x00"})) == ["query.tag"]
    assert _fields(await client.get("/api/v1/contacts/export", params={"q": "a\x00"})) == ["query.q"]


def _text_parameters() -> list[tuple[str, str, str]]:
    """(method, path, parameter) for every free-text query parameter of every API operation."""
    from server.api import all_operations
    from server.app import ROUTERS

    out = []
    for o in all_operations(ROUTERS):
        for name, f in (o.query.model_fields if o.query is not None else {}).items():
            if f.annotation is str or str in get_args(f.annotation):
                out.append((o.method, re.sub(r"\{[a-z_]+\}", "1", o.path), f.alias or name))
    return out


async def test_nul_in_any_text_query_parameter_is_422_naming_it(client: httpx.AsyncClient) -> None:
    # Every query model has the schema base's check, not only those that remembered to derive
    # from it (`?action=` of the audit log and `?q=` of suppressions answered 500 on PostgreSQL).
    parameters = _text_parameters()
    assert ("GET", "/api/v1/audit", "action") in parameters
    assert ("GET", "/api/v1/suppressions", "q") in parameters
    for method, path, name in parameters:
        r = await client.request(method, path, params={name: "a\x00"})
        assert _fields(r) == [f"query.{name}"], (method, path, name, r.text)


async def test_nul_in_the_dashboard_login_form_and_search_is_refused(
    app: Starlette, browser_client: BrowserFactory
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        page = await c.get("/login")
        r = await c.post(
            "/login", data={"email": "a\x00@x.test", "password": "p", "csrf_token": csrf_field(page.text)}
        )
        assert r.status_code == 422, r.text
    signed_in = await browser_client("admin")
    for path, params in (("/contacts", {"q": "a\x00"}), ("/suppressions", {"q": "a\x00"})):
        r = await signed_in.get(path, params=params)
        assert r.status_code == 422, r.text
        assert "NUL character" in r.text
    for query in ({"to": "0001-01-01"}, {"from": "9999-12-31"}):  # item 11 on the dashboard
        assert (await signed_in.get("/reports", params=query)).status_code == 200
    for path in (f"/contacts/{HUGE}", f"/messages/{HUGE}", f"/templates/{HUGE}", f"/providers/{HUGE}"):
        assert (await signed_in.get(path)).status_code == 404, path  # item 12 on the dashboard


async def test_nul_in_any_dashboard_form_is_a_422_page(
    app: Starlette, browser_client: BrowserFactory
) -> None:
    # Form posts that bypass the API's schemas (a reply, a session id) answered 500 on PostgreSQL.
    world = await ConversationWorld(app).build()
    try:
        assert (await world.post_twilio(world.twilio_form("hello"))).status_code == 200
    finally:
        await world.close()
    agent = await browser_client("agent")
    csrf = agent.cookies["sb_csrf"]
    conversation = (await agent.get("/api/v1/conversations")).json()["items"][0]["id"]
    for path, form in (
        (f"/inbox/{conversation}/reply", {"text": "hi\x00there", "confirmed": "1"}),
        ("/sessions/revoke", {"session_id": "a\x00"}),
    ):
        r = await agent.post(path, data={**form, "csrf_token": csrf})
        assert r.status_code == 422, (path, r.text)
        assert "NUL character" in r.text
    timeline = (await agent.get(f"/api/v1/conversations/{conversation}")).json()["messages"]
    assert [m["direction"] for m in timeline] == ["inbound"]  # no reply was sent


def test_every_operation_reads_its_input_through_the_storable_bases() -> None:
    """Every body and query model derives from `Schema` or `Query`, which refuse NUL (and integers
    beyond int64) naming the field: a model of its own would hand PostgreSQL what it answers 500 to."""
    own = [
        f"{o.method} {o.path}: {model.__name__}"
        for o in all_operations(ROUTERS)
        for model in (o.body, o.query)
        if model is not None and not issubclass(model, Schema | Query)
    ]
    assert own == []


async def test_nul_in_any_list_filter_is_422_naming_it(client: httpx.AsyncClient) -> None:
    for path, name in (
        ("/api/v1/audit", "action"),
        ("/api/v1/suppressions", "q"),
        ("/api/v1/templates", "cursor"),
        ("/api/v1/conversations", "cursor"),
        ("/api/v1/users", "cursor"),
    ):
        r = await client.get(path, params={name: "a\x00"})
        assert _fields(r) == [f"query.{name}"], path


async def test_nul_in_a_dashboard_form_or_filter_never_reaches_the_database(
    browser_client: BrowserFactory,
) -> None:
    signed_in = await browser_client("admin")
    r = await signed_in.get("/suppressions", params={"q": "a\x00"})
    assert r.status_code == 422 and "q:" in r.text and "NUL" in r.text
    r = await signed_in.get("/audit", params={"action": "a\x00"})
    assert r.status_code == 422 and "NUL" in r.text
    r = await signed_in.post("/sessions/revoke", data={"session_id": "a\x00"})
    assert r.status_code == 422 and "session_id" in r.text and "NUL" in r.text
    # A NUL in a query parameter of a form post, even one with an empty name, is refused too.
    r = await signed_in.post("/sessions/revoke", params={"": "a\x00"}, data={"session_id": "x"})
    assert r.status_code == 422 and "NUL" in r.text
    r = await signed_in.post("/api-keys", data={"name": "key\x00", "scopes": "contacts:read"})
    assert r.status_code == 422 and "NUL" in r.text


async def test_csv_row_with_nul_is_rejected_and_the_rest_kept(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    csv = "name,email,plan\nAda,ada@x.test,pro\nBad\x00,bad@x.test,\nGrace,grace@x.test,free\n"
    r = await client.post(
        "/api/v1/contacts/import", content=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    await app.state.services.importer.wait()
    status = (await client.get(f"/api/v1/contacts/import/{r.json()['job_id']}")).json()
    assert (status["created"], status["rejected_count"]) == (2, 1)
    assert status["rejected"][0]["row"] == 3
    assert status["rejected"][0]["errors"][0]["field"] == "name"


async def test_nul_in_a_signed_provider_event_is_stripped_and_stored(app: Starlette, db: Database) -> None:
    world = await World(app, db).build()
    events = [
        {"id": "e\x001", "message_id": "sbx_1", "status": "bounced", "reason": "no\x00 such user\ud800"},
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as c:
        r = await c.post(world.url("sandbox"), **world.sandbox(events))
    assert r.status_code == 200, r.text
    async with db.transaction() as s:
        stored = (await s.execute(select(MessageEvent))).scalars().one()
    assert "\x00" not in (stored.reason or "") and "\x00" not in (stored.provider_event_id or "")


# --- item 5: dict keys fit the audit column ----------------------------------------------------


async def test_an_attribute_key_too_long_for_the_audit_column_is_422(client: httpx.AsyncClient) -> None:
    created = (await client.post("/api/v1/contacts", json={"name": "Ada"})).json()
    key = "k" * 95
    r = await client.patch(f"/api/v1/contacts/{created['id']}", json={"attributes": {key: 1}})
    assert _fields(r) == ["attributes"]
    assert key[:20] in r.json()["errors"][0]["message"]


# --- item 11: dates at the ends of the calendar ------------------------------------------------


@pytest.mark.parametrize("query", [{"to": "0001-01-01"}, {"from": "9999-12-31"}])
async def test_report_range_at_the_ends_of_the_calendar_is_422(
    client: httpx.AsyncClient, query: dict[str, str]
) -> None:
    r = await client.get("/api/v1/reports/daily", params=query)
    assert _fields(r) == [f"query.{next(iter(query))}"]


# --- item 12: integers beyond int64 ------------------------------------------------------------


async def test_integers_beyond_int64_are_422_or_404(client: httpx.AsyncClient) -> None:
    body = {"contact_id": HUGE, "channel": "email", "subject": "s", "body": "b"}
    assert _fields(await client.post("/api/v1/messages", json=body)) == ["contact_id"]
    body = {"contact_id": 1, "channel": "email", "template_id": HUGE}
    assert _fields(await client.post("/api/v1/messages", json=body)) == ["template_id"]
    created = (await client.post("/api/v1/contacts", json={"name": "Ada"})).json()
    r = await client.post(f"/api/v1/contacts/{created['id']}/merge", json={"from": [HUGE]})
    assert _fields(r) == ["from.0"]
    r = await client.post("/api/v1/contacts", json={"name": "Ada", "attributes": {"n": HUGE}})
    assert _fields(r) == ["attributes"]
    assert _fields(await client.get("/api/v1/messages", params={"contact_id": str(HUGE)})) == [
        "query.contact_id"
    ]
    from server.pagination import encode_cursor

    r = await client.get("/api/v1/contacts", params={"cursor": encode_cursor(HUGE)})
    assert _fields(r) == ["query.cursor"]
    _problem(await client.get(f"/api/v1/contacts/{HUGE}"), 404)
    _problem(await client.get(f"/api/v1/messages/{HUGE}"), 404)


# --- item 13: nesting depth and the cost of unknown webhook ids --------------------------------


async def test_deeply_nested_json_body_is_400_not_a_crash(client: httpx.AsyncClient) -> None:
    json_type = {"Content-Type": "application/json"}
    _problem(await client.post("/api/v1/contacts", content=b"[" * 100_000, headers=json_type), 400)
    deep = b'{"name":"a","attributes":{"x":' + b"[" * 200 + b"]" * 200 + b"}}"
    _problem(await client.post("/api/v1/contacts", content=deep, headers=json_type), 400)


async def test_deeply_nested_webhook_is_400_before_or_after_its_signature(
    app: Starlette, db: Database
) -> None:
    world = await World(app, db).build()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as c:
        r = await c.post(
            world.url("mailgun"), content=b"[" * 100_000, headers={"Content-Type": "application/json"}
        )
        _problem(r, 400)
        signed = world.mailgun({"x": json.loads("[" * 20 + "]" * 20)} | mailgun_event_data("delivered"))
        r = await c.post(world.url("mailgun"), **signed)
        assert r.status_code == 200, r.text  # a provider's ordinary nesting is fine
        deep_signed = world.mailgun({"x": "PLACEHOLDER"} | mailgun_event_data("delivered", n=2))
        deep_signed["content"] = deep_signed["content"].replace(b'"PLACEHOLDER"', b"[" * 5000 + b"]" * 5000)
        _problem(await c.post(world.url("mailgun"), **deep_signed), 400)
        sandbox = world.sandbox([{"id": "e1", "message_id": "sbx_1", "status": "sent", "x": "PLACEHOLDER"}])
        sandbox["content"] = sandbox["content"].replace(b'"PLACEHOLDER"', b"[" * 5000 + b"]" * 5000)
        from server import signing
        from tests.webhooks.test_api import SANDBOX_KEY

        sandbox["headers"]["X-Sandbox-Signature"] = signing.sign(SANDBOX_KEY, sandbox["content"])
        _problem(await c.post(world.url("sandbox"), **sandbox), 400)


async def test_unknown_webhook_provider_ids_do_not_read_the_database(app: Starlette, db: Database) -> None:
    world = await World(app, db).build()
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as c:
            for _ in range(20):
                _problem(await c.post("/webhooks/987654", content=b"{}"), 404)
            for raw in ("0", "-1", "9" * 19, "abc"):
                _problem(await c.post(f"/webhooks/{raw}", content=b"{}"), 404)
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    assert len([s for s in statements if "provider" in s.lower()]) <= 1, statements


# --- item 10: Mailgun token replay -------------------------------------------------------------


async def test_mailgun_signature_replayed_with_other_event_data_is_401(app: Starlette, db: Database) -> None:
    world = await World(app, db).build()
    first = world.mailgun(mailgun_event_data("delivered"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as c:
        r = await c.post(world.url("mailgun"), **first)
        assert r.status_code == 200, r.text
        again = await c.post(world.url("mailgun"), **first)  # the provider retries: no change
        assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
        before = await world.counts()
        forged_doc = json.loads(first["content"])
        forged_doc["event-data"] = mailgun_event_data(
            "failed", n=9, severity="permanent", recipient="victim@example.test"
        )
        forged = {"content": json.dumps(forged_doc).encode(), "headers": first["headers"]}
        r = await c.post(world.url("mailgun"), **forged)
    _problem(r, 401)
    assert await world.counts() == before


# --- item 8: import jobs are bounded -----------------------------------------------------------


async def test_concurrent_imports_per_workspace_are_capped(app: Starlette, client: httpx.AsyncClient) -> None:
    cap = app.state.services.settings.import_jobs_per_workspace
    # One row per transaction: each import outlasts the few requests below by far on any machine.
    app.state.services.importer.batch_size = 1
    rows = "name\n" + "".join(f"n{i}\n" for i in range(1000))
    answers = []
    for _ in range(cap + 1):
        answers.append(
            await client.post(
                "/api/v1/contacts/import", content=rows.encode(), headers={"Content-Type": "text/csv"}
            )
        )
    assert [a.status_code for a in answers[:-1]] == [202] * cap
    assert _problem(answers[-1], 429)["status"] == 429
    assert "Retry-After" in answers[-1].headers
    importer = app.state.services.importer
    await importer.stop()  # the running imports end (their committed batches stay): room again
    r = await client.post(
        "/api/v1/contacts/import", content=b"name\nx\n", headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 202


async def test_finished_import_jobs_expire_and_keep_few_rejected_rows(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    from server.contacts.importer import MAX_REJECTED_KEPT

    bad = "email\n" + "".join("not-an-email\n" for _ in range(MAX_REJECTED_KEPT + 50))
    r = await client.post(
        "/api/v1/contacts/import", content=bad.encode(), headers={"Content-Type": "text/csv"}
    )
    importer = app.state.services.importer
    await importer.wait()
    status = (await client.get(f"/api/v1/contacts/import/{r.json()['job_id']}")).json()
    assert status["rejected_count"] == MAX_REJECTED_KEPT + 50
    assert len(status["rejected"]) == MAX_REJECTED_KEPT
    importer.finished_ttl_s = 0.0
    await importer.expire()  # jobs live in the database now: forgetting them is a query
    _problem(await client.get(f"/api/v1/contacts/import/{r.json()['job_id']}"), 404)
    async with app.state.services.db.transaction() as s:
        assert (await s.execute(select(Contact))).first() is None

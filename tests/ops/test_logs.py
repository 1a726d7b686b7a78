"""Secrets never reach a log line; the request id does."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.routing import Route

from server.logs import redact, request_context, setup_logging
from tests.conftest import PASSWORD
from tests.ops.conftest import AppFactory, add_user, http_client


@pytest.fixture
def json_logs() -> Iterator[None]:
    """Production logging (JSON lines on stderr) at DEBUG, restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_no_secret_reaches_the_logs_and_request_ids_do(
    make_app: AppFactory, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    app = await make_app(log_json=True, log_level="DEBUG")

    async def boom(request: Request) -> Any:
        # A careless error message quoting what it was given.
        raise RuntimeError(
            f"upstream refused {request.headers['authorization']} {{'password': {PASSWORD!r}}}"
        )

    app.router.routes.append(Route("/boom", boom))
    setup_logging(app.state.services.settings)
    logging.getLogger("switchboard.test").info("logging is on")
    email = await add_user(app)
    client = http_client(app, raise_errors=False)
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": "wrong " + PASSWORD})
    assert r.status_code == 401
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    tokens = r.json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    auth = {"Authorization": f"Bearer {access}"}
    assert (await client.get("/api/v1/me", headers=auth)).status_code == 200
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})).status_code == 200
    r = await client.get("/boom", headers={**auth, "X-Request-ID": "rid-boom-1"})
    assert r.status_code == 500
    assert access not in r.text and PASSWORD not in r.text

    out = capsys.readouterr()
    text = out.out + out.err
    records = lines(out.err)
    assert any(rec["msg"] == "logging is on" for rec in records), text[:2000]
    for secret in (PASSWORD, access, refresh, app.state.services.settings.secret_key):
        assert secret not in text
    # Statements and their parameters (password hashes, token digests) are not logged even at DEBUG.
    assert "refresh_token" not in text and "password_hash" not in text
    crash = [rec for rec in records if rec["logger"] == "switchboard.errors"]
    assert len(crash) == 1
    assert crash[0]["request_id"] == "rid-boom-1"
    assert "RuntimeError" in crash[0]["exc"] and "[redacted]" in crash[0]["exc"]


def test_request_context_tags_lines_outside_requests(
    json_logs: None, capsys: pytest.CaptureFixture[str], make_app: Any
) -> None:
    from tests.conftest import make_settings

    setup_logging(make_settings("sqlite+aiosqlite:///:memory:", log_json=True))
    log = logging.getLogger("switchboard.dispatcher")
    with request_context("rid-from-web"):
        log.info("sent message %d", 7, extra={"message_id": 7})
    log.info("idle")
    recs = lines(capsys.readouterr().err)
    assert recs[0]["request_id"] == "rid-from-web" and recs[0]["message_id"] == 7
    assert recs[1]["request_id"] == "-"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ('headers={"authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
        ("refresh with eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJzdWIiOiIxIn0"),
        ('config {"api_key": "SG.x1y2z3", "from_email": "a@b.test"}', "SG.x1y2z3"),
        ("connecting to postgresql://sb:hunter2@db/sb", "hunter2"),
        ("POST https://hooks.slack.com/services/T0/B0/XyZ failed", "XyZ"),
        ("twilio auth_token=0123abcd rejected", "0123abcd"),
        ("{'password': 'correct horse battery'}", "horse"),
    ],
)
def test_redaction_masks_secret_shapes(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert "[redacted]" in redact(line)


async def test_a_message_remembers_the_request_that_created_it(client: Any, db: Any) -> None:
    from server.messages.models import Message

    r = await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})
    cid = r.json()["id"]
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": cid, "channel": "email", "subject": "Hi", "body": "Hello"},
        headers={"X-Request-ID": "rid-send-7"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-request-id"] == "rid-send-7"
    async with db.transaction() as s:
        m = await s.get(Message, r.json()["id"])
    assert m is not None and m.request_id == "rid-send-7"


async def test_dispatcher_lines_carry_the_request_id_of_the_send(
    make_app: AppFactory, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from tests.ops.conftest import sign_in

    app = await make_app(embedded_worker=True, log_json=True, log_level="DEBUG")
    setup_logging(app.state.services.settings)
    client = await sign_in(app)
    r = await client.post(
        "/api/v1/providers",
        json={"name": "Sandbox", "kind": "sandbox", "channel": "email", "priority": 1, "config": {}},
    )
    assert r.status_code == 201, r.text
    cid = (await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})).json()[
        "id"
    ]
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": cid, "channel": "email", "subject": "Hi", "body": "Hello"},
        headers={"X-Request-ID": "rid-dispatch-9"},
    )
    mid = r.json()["id"]
    for _ in range(100):
        if (await client.get(f"/api/v1/messages/{mid}")).json()["status"] in ("sent", "delivered"):
            break
        await asyncio.sleep(0.05)
    records = lines(capsys.readouterr().err)
    sends = [
        rec for rec in records if rec["logger"] == "switchboard.dispatcher" and rec.get("message_id") == mid
    ]
    assert sends, [rec for rec in records if rec["logger"].startswith("switchboard")]
    assert all(rec["request_id"] == "rid-dispatch-9" for rec in sends)
    assert sends[0]["msg"] == f"message {mid}: sent"

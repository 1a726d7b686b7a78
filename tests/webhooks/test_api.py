"""`/webhooks/{provider_id}` through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from server import signing
from server.app import create_app
from server.db import Database
from server.events.models import Event
from server.messages.models import Message, MessageEvent, Suppression
from server.providers.models import Provider
from server.webhooks.api import routes as webhook_routes
from server.workspaces.models import Workspace
from tests.conftest import make_settings
from tests.messages.support import logged

from .payloads import (
    SG_X_MESSAGE_ID,
    mailgun_event_data,
    sendgrid_event,
    twilio_form,
    whatsapp_body,
    whatsapp_status,
)
from .test_verify import SendGridKey

MG_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
TW_TOKEN = "f1e2d3c4b5a697887766554433221100"
WA_SECRET = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
WA_VERIFY = "my-verify-token"
SANDBOX_KEY = "sandbox-webhook-key-0123456789abcdef"


def signed_sendgrid(
    key: SendGridKey, items: list[dict[str, Any]], *, ts: int | None = None
) -> dict[str, Any]:
    """httpx arguments for a SendGrid Event Webhook POST, signed as SendGrid signs."""
    body = json.dumps(items).encode()
    t = str(int(time.time()) if ts is None else ts)
    return {
        "content": body,
        "headers": {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": key.sign(t, body),
            "X-Twilio-Email-Event-Webhook-Timestamp": t,
        },
    }


def with_webhooks(app: Starlette) -> Starlette:
    """The lead wires `routes` into the app; until then, add them here."""
    if not any(getattr(r, "path", None) == "/webhooks/{provider_id}" for r in app.router.routes):
        app.router.routes.extend(webhook_routes)
    return app


class World:
    """Two workspaces, one connection of each kind in the first, and a message per connection."""

    def __init__(self, app: Starlette, db: Database) -> None:
        self.app = with_webhooks(app)
        self.db = db
        self.sg_key = SendGridKey()
        self.providers: dict[str, Provider] = {}
        self.messages: dict[str, int] = {}
        self.ws = 0
        self.other_ws = 0

    async def build(self) -> World:
        async with self.db.transaction() as s:
            ws, other = Workspace(name="Acme"), Workspace(name="Globex")
            s.add_all([ws, other])
            await s.flush()
            self.ws, self.other_ws = ws.id, other.id
            configs: dict[str, tuple[str, dict[str, Any]]] = {
                "sendgrid": ("email", {"webhook_public_key": self.sg_key.public_b64}),
                "mailgun": ("email", {"webhook_signing_key": MG_KEY}),
                "twilio": ("sms", {"auth_token": TW_TOKEN}),
                "whatsapp": ("whatsapp", {"app_secret": WA_SECRET, "verify_token": WA_VERIFY}),
                "sandbox": ("email", {}),
                "smtp": ("email", {"host": "localhost"}),
            }
            for kind, (channel, config) in configs.items():
                p = Provider(
                    workspace_id=ws.id,
                    name=kind,
                    kind=kind,
                    channel=channel,
                    config=config,
                    webhook_key=SANDBOX_KEY,
                )
                s.add(p)
                self.providers[kind] = p
            await s.flush()
            pmids = {
                "sendgrid": (SG_X_MESSAGE_ID, "a@example.test"),
                "mailgun": ("20260203192638.000be97f99f8cea1@sample.mailgun.test", "alice@example.test"),
                "twilio": ("SM1342fe1b2c904d1ab04f0fc7a58abca9", "+15558675310"),
                "whatsapp": ("wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA", "+16315551181"),
                "sandbox": ("sbx_1", "bob@example.test"),
            }
            for kind, (pmid, to) in pmids.items():
                m = Message(
                    workspace_id=ws.id,
                    channel=configs[kind][0],
                    to_address=to,
                    status="sent",
                    provider_id=self.providers[kind].id,
                    provider_kind=kind,
                    provider_message_id=pmid,
                )
                s.add(m)
                await s.flush()
                self.messages[kind] = m.id
        return self

    def url(self, kind: str) -> str:
        return f"/webhooks/{self.providers[kind].id}"

    async def status(self, kind: str) -> str:
        async with self.db.transaction() as s:
            q = select(Message.status).where(Message.id == self.messages[kind])
            return (await s.execute(q)).scalar_one()

    async def counts(self) -> tuple[int, int, int]:
        async with self.db.transaction() as s:
            n_events = (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one()
            n_log = len((await s.execute(logged())).all())
            n_supp = (await s.execute(select(func.count()).select_from(Suppression))).scalar_one()
        return n_events, n_log, n_supp

    # --- signed requests, as each provider makes them ---

    def sendgrid(
        self, items: list[dict[str, Any]], *, ts: int | None = None, key: SendGridKey | None = None
    ) -> dict[str, Any]:
        return signed_sendgrid(key or self.sg_key, items, ts=ts)

    def mailgun(self, data: dict[str, Any], *, ts: int | None = None, key: str = MG_KEY) -> dict[str, Any]:
        t = str(int(time.time()) if ts is None else ts)
        token = hashlib.sha256(json.dumps(data).encode() + t.encode()).hexdigest()[:50]
        sig = hmac.new(key.encode(), (t + token).encode(), hashlib.sha256).hexdigest()
        body = {"signature": {"timestamp": t, "token": token, "signature": sig}, "event-data": data}
        return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}

    def twilio(self, form: dict[str, str], *, url: str, token: str = TW_TOKEN) -> dict[str, Any]:
        signature = RequestValidator(token).compute_signature(url, form)  # Twilio's own code signs
        return {
            "content": urlencode(form).encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
        }

    def whatsapp(self, body: bytes, *, secret: str = WA_SECRET) -> dict[str, Any]:
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {"content": body, "headers": {"Content-Type": "application/json", "X-Hub-Signature-256": sig}}

    def sandbox(self, events: list[dict[str, Any]], *, ts: int | None = None) -> dict[str, Any]:
        body = json.dumps({"events": events}).encode()
        header = signing.sign(SANDBOX_KEY, body, timestamp=ts)
        return {
            "content": body,
            "headers": {"Content-Type": "application/json", "X-Sandbox-Signature": header},
        }


@pytest.fixture
async def world(app: Starlette, db: Database) -> World:
    return await World(app, db).build()


@pytest.fixture
async def hooks(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status


async def assert_refused(hooks: httpx.AsyncClient, world: World, kind: str, request: dict[str, Any]) -> None:
    before = await world.counts()
    r = await hooks.post(world.url(kind), **request)
    assert_problem(r, 401)
    assert await world.counts() == before
    assert await world.status(kind) == "sent"


# --- SendGrid ---------------------------------------------------------------------------------


async def test_sendgrid_valid_batch_then_replay(hooks: httpx.AsyncClient, world: World) -> None:
    batch = [sendgrid_event("delivered", 1, email="a@example.test"), sendgrid_event("open", 2)]
    r = await hooks.post(world.url("sendgrid"), **world.sendgrid(batch))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "received": 2,
        "recorded": 2,
        "duplicates": 0,
        "unmatched": 0,
        "status_changes": 1,
        "suppressions": 0,
    }
    assert await world.status("sendgrid") == "delivered"
    after_first = await world.counts()
    assert after_first == (2, 1, 0)
    # the provider retries the same batch (new timestamp, new signature): nothing changes
    r = await hooks.post(world.url("sendgrid"), **world.sendgrid(batch))
    assert r.status_code == 200 and r.json()["duplicates"] == 2 and r.json()["recorded"] == 0
    assert await world.counts() == after_first


async def test_sendgrid_forged_missing_stale(hooks: httpx.AsyncClient, world: World) -> None:
    batch = [sendgrid_event("delivered", 1)]
    await assert_refused(hooks, world, "sendgrid", world.sendgrid(batch, key=SendGridKey()))
    unsigned = world.sendgrid(batch)
    del unsigned["headers"]["X-Twilio-Email-Event-Webhook-Signature"]
    await assert_refused(hooks, world, "sendgrid", unsigned)
    await assert_refused(hooks, world, "sendgrid", world.sendgrid(batch, ts=int(time.time()) - 600))
    tampered = world.sendgrid(batch)
    tampered["content"] = tampered["content"].replace(b"delivered", b"bounce")
    await assert_refused(hooks, world, "sendgrid", tampered)


async def test_sendgrid_mixed_batch_with_suppression(hooks: httpx.AsyncClient, world: World) -> None:
    batch = [
        sendgrid_event("processed", 1),
        sendgrid_event("deferred", 2),
        sendgrid_event("bounce", 3, type="bounce", reason="550 5.1.1 unknown user", email="A@Example.test"),
        sendgrid_event("click", 4),
        sendgrid_event("delivered", 5, sg_message_id="unknown.filter"),
    ]
    r = await hooks.post(world.url("sendgrid"), **world.sendgrid(batch))
    assert r.status_code == 200, r.text
    assert r.json()["unmatched"] == 1 and r.json()["suppressions"] == 1
    assert await world.status("sendgrid") == "bounced"
    async with world.db.transaction() as s:
        supp = (await s.execute(select(Suppression))).scalars().one()
        types = [e.type for e in (await s.execute(logged())).scalars()]
    assert (supp.address, supp.reason, supp.workspace_id) == ("a@example.test", "bounce", world.ws)
    assert types == ["message.status", "suppression.created"]


async def test_malformed_but_signed_body_is_400_and_stores_nothing(
    hooks: httpx.AsyncClient, world: World
) -> None:
    request = world.sendgrid([])
    body = b'{"not": "an array"}'
    t = request["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"]
    request["content"] = body
    request["headers"]["X-Twilio-Email-Event-Webhook-Signature"] = world.sg_key.sign(t, body)
    r = await hooks.post(world.url("sendgrid"), **request)
    assert_problem(r, 400)
    assert await world.counts() == (0, 0, 0)


async def test_unsigned_malformed_body_is_401_not_400(hooks: httpx.AsyncClient, world: World) -> None:
    r = await hooks.post(world.url("sendgrid"), content=b"garbage")
    assert_problem(r, 401)


# --- Mailgun ----------------------------------------------------------------------------------


async def test_mailgun_valid_forged_missing_stale_replayed(hooks: httpx.AsyncClient, world: World) -> None:
    data = mailgun_event_data("delivered")
    await assert_refused(hooks, world, "mailgun", world.mailgun(data, key="key-not-ours"))
    await assert_refused(hooks, world, "mailgun", world.mailgun(data, ts=int(time.time()) - 301))
    unsigned = {
        "content": json.dumps({"event-data": data}).encode(),
        "headers": {"Content-Type": "application/json"},
    }
    await assert_refused(hooks, world, "mailgun", unsigned)
    r = await hooks.post(world.url("mailgun"), **world.mailgun(data))
    assert r.status_code == 200, r.text
    assert await world.status("mailgun") == "delivered"
    r = await hooks.post(world.url("mailgun"), **world.mailgun(data))  # replay, freshly signed
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    assert await world.counts() == (1, 1, 0)


async def test_mailgun_complaint_suppresses(hooks: httpx.AsyncClient, world: World) -> None:
    r = await hooks.post(world.url("mailgun"), **world.mailgun(mailgun_event_data("complained")))
    assert r.status_code == 200, r.text
    async with world.db.transaction() as s:
        rows = (await s.execute(select(Suppression.address, Suppression.reason))).all()
    assert [tuple(r) for r in rows] == [("alice@example.test", "spam")]
    assert await world.status("mailgun") == "sent"  # a complaint says nothing about delivery


# --- Twilio -----------------------------------------------------------------------------------


async def test_twilio_valid_forged_missing_replayed(hooks: httpx.AsyncClient, world: World) -> None:
    url = "http://testserver" + world.url("twilio")
    form = twilio_form("delivered")
    await assert_refused(hooks, world, "twilio", world.twilio(form, url=url, token="not-our-token"))
    await assert_refused(hooks, world, "twilio", world.twilio(form, url="http://elsewhere.test/webhooks/1"))
    unsigned = world.twilio(form, url=url)
    del unsigned["headers"]["X-Twilio-Signature"]
    await assert_refused(hooks, world, "twilio", unsigned)
    r = await hooks.post(world.url("twilio"), **world.twilio(form, url=url))
    assert r.status_code == 200, r.text
    assert await world.status("twilio") == "delivered"
    r = await hooks.post(world.url("twilio"), **world.twilio(form, url=url))
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    # a late "sent" is recorded but never moves the message back
    r = await hooks.post(world.url("twilio"), **world.twilio(twilio_form("sent"), url=url))
    assert r.json()["recorded"] == 1 and r.json()["status_changes"] == 0
    assert await world.status("twilio") == "delivered"


async def test_twilio_signs_the_public_url_behind_a_proxy(db_url: str) -> None:
    app = with_webhooks(create_app(make_settings(db_url, public_url="https://crm.example.test/")))
    async with app.router.lifespan_context(app):
        world = await World(app, app.state.services.db).build()
        public = "https://crm.example.test" + world.url("twilio")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.5:8000"
        ) as c:
            r = await c.post(
                world.url("twilio"),
                **world.twilio(twilio_form("sent"), url="http://10.0.0.5:8000" + world.url("twilio")),
            )
            assert_problem(r, 401)
            r = await c.post(
                world.url("twilio"), **world.twilio(twilio_form("undelivered", error="30005"), url=public)
            )
            assert r.status_code == 200, r.text
        assert await world.status("twilio") == "failed"
        async with world.db.transaction() as s:
            assert (await s.execute(select(Suppression.address))).scalars().all() == ["+15558675310"]


# --- WhatsApp ---------------------------------------------------------------------------------


async def test_whatsapp_valid_forged_missing_replayed(hooks: httpx.AsyncClient, world: World) -> None:
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
    body = whatsapp_body(whatsapp_status(wamid, "delivered"), whatsapp_status(wamid, "read"))
    await assert_refused(hooks, world, "whatsapp", world.whatsapp(body, secret="not-ours"))
    await assert_refused(
        hooks, world, "whatsapp", {"content": body, "headers": {"Content-Type": "application/json"}}
    )
    r = await hooks.post(world.url("whatsapp"), **world.whatsapp(body))
    assert r.status_code == 200, r.text
    assert r.json()["recorded"] == 2 and r.json()["status_changes"] == 1
    assert await world.status("whatsapp") == "delivered"
    r = await hooks.post(world.url("whatsapp"), **world.whatsapp(body))
    assert r.json()["duplicates"] == 2
    async with world.db.transaction() as s:
        data = (await s.execute(logged())).scalars().one().data
    assert data == {
        "message_id": world.messages["whatsapp"],
        "contact_id": None,
        "channel": "whatsapp",
        "status": "delivered",
        "provider": "whatsapp",
        "reason": None,
    }


async def test_whatsapp_handshake(hooks: httpx.AsyncClient, world: World) -> None:
    url = world.url("whatsapp")
    ok = {"hub.mode": "subscribe", "hub.verify_token": WA_VERIFY, "hub.challenge": "1158201444"}
    r = await hooks.get(url, params=ok)
    assert r.status_code == 200 and r.text == "1158201444"
    assert r.headers["content-type"].startswith("text/plain")
    assert_problem(await hooks.get(url, params={**ok, "hub.verify_token": "guess"}), 403)
    assert_problem(await hooks.get(url, params={**ok, "hub.mode": "unsubscribe"}), 403)
    assert_problem(await hooks.get(url, params={"hub.mode": "subscribe", "hub.challenge": "1"}), 403)
    assert_problem(await hooks.get(world.url("sendgrid"), params=ok), 404)


# --- sandbox, and routing ---------------------------------------------------------------------


async def test_sandbox_valid_stale_and_forged(hooks: httpx.AsyncClient, world: World) -> None:
    events = [
        {
            "id": "evt_1",
            "message_id": "sbx_1",
            "status": "delivered",
            "timestamp": int(time.time()),
            "recipient": "bob@example.test",
            "reason": None,
        }
    ]
    await assert_refused(hooks, world, "sandbox", world.sandbox(events, ts=int(time.time()) - 301))
    forged = world.sandbox(events)
    forged["headers"]["X-Sandbox-Signature"] = signing.sign("wrong", forged["content"])
    await assert_refused(hooks, world, "sandbox", forged)
    r = await hooks.post(world.url("sandbox"), **world.sandbox(events))
    assert r.status_code == 200, r.text
    assert await world.status("sandbox") == "delivered"


async def test_unknown_connection_is_404(hooks: httpx.AsyncClient, world: World) -> None:
    assert_problem(await hooks.post("/webhooks/999999", content=b"[]"), 404)
    assert_problem(await hooks.post("/webhooks/abc", content=b"[]"), 404)
    assert_problem(await hooks.post("/webhooks/%C2%B2", content=b"[]"), 404)  # "²" is a digit to Python
    assert_problem(await hooks.post(world.url("smtp"), content=b"[]"), 404)  # no webhooks for SMTP


async def test_another_workspaces_message_is_untouched(hooks: httpx.AsyncClient, world: World) -> None:
    async with world.db.transaction() as s:
        theirs = Message(
            workspace_id=world.other_ws,
            channel="email",
            to_address="x@globex.test",
            status="sent",
            provider_message_id="theirs",
        )
        s.add(theirs)
        await s.flush()
        victim = theirs.id
    batch = [
        sendgrid_event("delivered", 1, sg_message_id="theirs.filter"),
        sendgrid_event("bounce", 2, type="bounce", message_id=victim, sg_message_id="theirs.filter"),
    ]
    r = await hooks.post(world.url("sendgrid"), **world.sendgrid(batch))
    assert r.status_code == 200 and r.json()["unmatched"] == 2 and r.json()["status_changes"] == 0
    async with world.db.transaction() as s:
        assert (await s.execute(select(Message.status).where(Message.id == victim))).scalar_one() == "sent"
        other_log = (await s.execute(logged(Event.workspace_id == world.other_ws))).all()
        stored = (await s.execute(select(MessageEvent.message_id, MessageEvent.workspace_id))).all()
    assert other_log == []
    assert [tuple(r) for r in stored] == [(None, world.ws), (None, world.ws)]


# --- the sandbox adapter's own webhooks, end to end ----------------------------------------------


async def test_sandbox_adapter_webhooks_move_the_message(hooks: httpx.AsyncClient, world: World) -> None:
    """The sandbox adapter (server.providers.adapters.sandbox) posts its signed webhooks to us."""
    from server.providers.adapters.base import OutgoingMessage
    from server.providers.adapters.sandbox import SandboxAdapter

    provider = world.providers["sandbox"]
    adapter = SandboxAdapter(
        {"delivery_delay_ms": 300, "bounce_rate": 1.0},  # time to store the provider message id
        http=hooks,
        provider_id=provider.id,
        webhook_url="http://testserver" + world.url("sandbox"),
        webhook_key=SANDBOX_KEY,
    )
    async with world.db.transaction() as s:
        m = Message(
            workspace_id=world.ws,
            channel="email",
            to_address="Carol@Example.test",
            status="sending",
            provider_id=provider.id,
            provider_kind="sandbox",
        )
        s.add(m)
        await s.flush()
        mid = m.id
    result = await adapter.send(
        OutgoingMessage(
            message_id=mid,
            workspace_id=world.ws,
            channel="email",
            to="Carol@Example.test",
            subject="Hi",
            body="Hello",
            idempotency_key=f"sb-{world.ws}-{mid}",
        )
    )
    async with world.db.transaction() as s:
        row = await s.get(Message, mid)
        assert row is not None
        row.provider_message_id = result.provider_message_id  # what the dispatcher stores
    for _ in range(250):
        if adapter.pending_webhooks == 0:
            break
        await asyncio.sleep(0.02)
    assert adapter.pending_webhooks == 0
    await adapter.aclose()
    async with world.db.transaction() as s:
        status = (await s.execute(select(Message.status).where(Message.id == mid))).scalar_one()
        kinds = (
            (await s.execute(select(MessageEvent.status).where(MessageEvent.message_id == mid)))
            .scalars()
            .all()
        )
        supp = (await s.execute(select(Suppression.address, Suppression.reason))).all()
    assert status == "bounced"
    assert sorted(kinds) == ["bounced", "sent"]
    assert [tuple(r) for r in supp] == [("carol@example.test", "bounce")]


async def test_twilio_callback_url_can_carry_our_message_id(hooks: httpx.AsyncClient, world: World) -> None:
    """Matched by our id even when the SID is not stored yet (the callback beat the send's commit)."""
    async with world.db.transaction() as s:
        m = Message(
            workspace_id=world.ws,
            channel="sms",
            to_address="+15558675311",
            status="sending",
            provider_id=world.providers["twilio"].id,
            provider_kind="twilio",
        )
        s.add(m)
        await s.flush()
        mid = m.id
    path = f"{world.url('twilio')}?sb_message_id={mid}"
    request = world.twilio(twilio_form("sent", sid="SMnotstoredyet"), url="http://testserver" + path)
    r = await hooks.post(path, **request)
    assert r.status_code == 200 and r.json()["unmatched"] == 0, r.text
    async with world.db.transaction() as s:
        assert (await s.execute(select(Message.status).where(Message.id == mid))).scalar_one() == "sent"
    # the id is part of what Twilio signs: pointing the same body at another message breaks the signature
    other = f"{world.url('twilio')}?sb_message_id={world.messages['twilio']}"
    r = await hooks.post(other, **request)
    assert_problem(r, 401)


async def test_a_rotated_key_is_picked_up_without_waiting_for_the_cache(
    hooks: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.webhooks import api as webhooks_api

    batch = [sendgrid_event("open", 1)]
    assert (await hooks.post(world.url("sendgrid"), **world.sendgrid(batch))).status_code == 200  # row cached
    new_key = SendGridKey()
    async with world.db.transaction() as s:
        row = await s.get(Provider, world.providers["sendgrid"].id)
        assert row is not None
        row.config = {"webhook_public_key": new_key.public_b64}
    monkeypatch.setattr(webhooks_api, "REVERIFY_AGE_S", 0.0)  # as if the cached row were a second old
    r = await hooks.post(world.url("sendgrid"), **world.sendgrid([sendgrid_event("open", 2)], key=new_key))
    assert r.status_code == 200, r.text
    # and the old key no longer works
    r = await hooks.post(world.url("sendgrid"), **world.sendgrid([sendgrid_event("open", 3)]))
    assert_problem(r, 401)

"""A provider connected through the API, a message sent through the API, its webhook, its timeline."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from sqlalchemy import update
from starlette.applications import Starlette

from server.db import Database
from server.messages.models import Message
from tests.messages.support import logged

from .payloads import sendgrid_event
from .test_api import SendGridKey, signed_sendgrid, with_webhooks


async def test_connected_provider_receives_its_webhooks(
    app: Starlette, db: Database, client: httpx.AsyncClient
) -> None:
    with_webhooks(app)
    key = SendGridKey()
    r = await client.post(
        "/api/v1/providers",
        json={
            "name": "sendgrid",
            "kind": "sendgrid",
            "channel": "email",
            "priority": 1,
            "config": {
                "api_key": "SG.x",
                "from_email": "news@example.test",
                "webhook_public_key": key.public_b64,
            },
        },
    )
    assert r.status_code == 201, r.text
    webhook_path = urlsplit(r.json()["webhook_url"]).path
    provider_id = r.json()["id"]
    r = await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})
    contact_id = r.json()["id"]
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": contact_id, "channel": "email", "subject": "Hi", "body": "Hello"},
    )
    assert r.status_code == 202, r.text
    message_id = r.json()["id"]
    # what the dispatcher records once SendGrid accepted the send (202 with X-Message-Id)
    async with db.transaction() as s:
        await s.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                status="sent", provider_id=provider_id, provider_kind="sendgrid", provider_message_id="XMSGID"
            )
        )

    batch = [
        sendgrid_event(
            "delivered", 1, email="ada@example.test", sg_message_id="XMSGID.filter", message_id=message_id
        ),
        sendgrid_event(
            "open", 2, email="ada@example.test", sg_message_id="XMSGID.filter", message_id=message_id
        ),
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as hooks:
        r = await hooks.post(webhook_path, **signed_sendgrid(key, batch))
    assert r.status_code == 200, r.text

    detail = (await client.get(f"/api/v1/messages/{message_id}")).json()
    assert detail["status"] == "delivered"
    assert [e["status"] for e in detail["events"]][-2:] == ["delivered", "opened"]
    async with db.transaction() as s:
        last = (await s.execute(logged())).scalars().all()[-1]
    assert last.type == "message.status" and last.contact_id == contact_id
    assert last.data == {
        "message_id": message_id,
        "contact_id": contact_id,
        "channel": "email",
        "status": "delivered",
        "provider": "sendgrid",
        "reason": None,
    }

"""Through the API: a message posted to `/api/v1/messages` is sent by the embedded dispatcher at once
(woken by the commit, not by its poll), with its whole timeline."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.settings import Settings
from tests.conftest import make_settings
from tests.dispatcher.conftest import SinkFactory


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url, embedded_worker=True, dispatcher_poll_s=30.0)


async def test_posted_message_is_sent_by_the_embedded_dispatcher(
    client: httpx.AsyncClient, make_sink: SinkFactory
) -> None:
    sink = await make_sink()
    r = await client.post(
        "/api/v1/providers",
        json={
            "name": "Sandbox",
            "kind": "sandbox",
            "channel": "email",
            "priority": 1,
            "config": {"delivery_delay_ms": -1, "sink_url": sink.url},
        },
    )
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})
    contact = r.json()
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": contact["id"], "channel": "email", "subject": "Hi {{ name }}", "body": "Hello"},
    )
    assert r.status_code == 202, r.text
    message = r.json()

    for _ in range(100):  # 5 s, far below the 30 s poll
        detail = (await client.get(f"/api/v1/messages/{message['id']}")).json()
        if detail["status"] == "sent":
            break
        await asyncio.sleep(0.05)

    assert detail["status"] == "sent", detail
    assert [e["status"] for e in detail["events"]] == ["queued", "sending", "sent"]
    [request] = sink.requests
    assert request.key.startswith("sb-") and request.key.endswith(f"-{message['id']}")
    assert b"Hi Ada" in request.body

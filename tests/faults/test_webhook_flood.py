"""A webhook flood: 20,000 provider events for 10,000 messages, 10 % of them replayed and 5 % more
forged, posted concurrently in random order. The final state is exact: every genuine event recorded
once, every message delivered, nothing from the forged requests anywhere."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from server import signing
from server.db import Database
from server.events.models import Event
from server.messages.models import Message, MessageEvent, Suppression
from server.providers.models import Provider
from server.workspaces.models import Workspace

MESSAGES = 10_000
PER_REQUEST = 25  # messages per request, each with its `sent` then `delivered` event
KEY = "flood-webhook-key-" + "0" * 32


def _request(events: list[dict[str, Any]], key: str = KEY) -> dict[str, Any]:
    body = json.dumps({"events": events}).encode()
    return {
        "content": body,
        "headers": {"Content-Type": "application/json", "X-Sandbox-Signature": signing.sign(key, body)},
    }


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_flood_with_replays_and_forgeries_ends_in_the_exact_state(app: Any, db: Database) -> None:
    async with db.transaction() as s:
        ws = Workspace(name="Flood")
        s.add(ws)
        await s.flush()
        provider = Provider(
            workspace_id=ws.id, name="sbx", kind="sandbox", channel="email", config={}, webhook_key=KEY
        )
        s.add(provider)
        await s.flush()
        rows = [
            {
                "workspace_id": ws.id,
                "channel": "email",
                "to_address": f"p{i}@flood.test",
                "status": "sending",
                "provider_id": provider.id,
                "provider_kind": "sandbox",
                "provider_message_id": f"sbx-flood-{i}",
            }
            for i in range(MESSAGES)
        ]
        await s.execute(insert(Message), rows)

    now = int(time.time())
    genuine = []
    for start in range(0, MESSAGES, PER_REQUEST):
        events = []
        for i in range(start, start + PER_REQUEST):
            for status in ("sent", "delivered"):
                events.append(
                    {
                        "id": str(uuid.uuid4()),
                        "message_id": f"sbx-flood-{i}",
                        "status": status,
                        "timestamp": now,
                        "recipient": f"p{i}@flood.test",
                        "reason": None,
                    }
                )
        genuine.append(events)
    total_events = sum(len(e) for e in genuine)
    assert total_events == 20_000

    rng = random.Random(7)
    replays = rng.sample(genuine, len(genuine) // 10)  # 10 % of the events again
    forged = [  # 5 % more, signed with the wrong key: bounces that must never land
        [
            {
                "id": str(uuid.uuid4()),
                "message_id": f"sbx-flood-{rng.randrange(MESSAGES)}",
                "status": "bounced",
                "timestamp": now,
                "recipient": "x@flood.test",
                "reason": "forged",
            }
            for _ in range(PER_REQUEST * 2)
        ]
        for _ in range(len(genuine) // 20)
    ]
    posts = [(e, KEY, 200) for e in genuine + replays] + [(e, "wrong-key-" + "1" * 32, 401) for e in forged]
    rng.shuffle(posts)

    url = f"/webhooks/{provider.id}"
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[tuple[list[dict[str, Any]], str, int]] = asyncio.Queue()
    for p in posts:
        queue.put_nowait(p)

    async def poster(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            events, key, expected = queue.get_nowait()
            r = await client.post(url, **_request(events, key))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code == expected, r.text

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
        await asyncio.wait_for(asyncio.gather(*(poster(client) for _ in range(16))), timeout=240)

    assert statuses == {200: len(genuine) + len(replays), 401: len(forged)}
    async with db.transaction() as s:
        by_status = dict(
            (
                await s.execute(
                    select(Message.status, func.count())
                    .where(Message.workspace_id == ws.id)
                    .group_by(Message.status)
                )
            ).all()
        )
        recorded = (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one()
        forged_seen = (
            await s.execute(
                select(func.count()).select_from(MessageEvent).where(MessageEvent.reason == "forged")
            )
        ).scalar_one()
        changes = (
            await s.execute(select(func.count()).select_from(Event).where(Event.type == "message.status"))
        ).scalar_one()
        suppressions = (await s.execute(select(func.count()).select_from(Suppression))).scalar_one()
    assert by_status == {"delivered": MESSAGES}
    assert recorded == total_events  # each genuine event once, replays and forgeries not at all
    assert forged_seen == 0
    assert changes == 2 * MESSAGES  # sending→sent and sent→delivered, each logged exactly once
    assert suppressions == 0

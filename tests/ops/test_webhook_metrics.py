"""Webhook outcomes reach /metrics (uses the webhooks suite's World of provider connections)."""

from __future__ import annotations

import json

import httpx
from starlette.applications import Starlette

from server.db import Database
from tests.ops.test_metrics import samples
from tests.webhooks.payloads import mailgun_event_data
from tests.webhooks.test_api import World


async def test_webhook_outcomes_are_counted(app: Starlette, db: Database) -> None:
    world = await World(app, db).build()
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as hooks:
        data = mailgun_event_data("delivered")
        assert (await hooks.post(world.url("mailgun"), **world.mailgun(data))).status_code == 200
        assert (await hooks.post(world.url("mailgun"), **world.mailgun(data))).status_code == 200  # replay
        forged = world.mailgun(mailgun_event_data("delivered", n=2), key="key-not-ours")
        assert (await hooks.post(world.url("mailgun"), **forged)).status_code == 401
        bad = world.mailgun({"event": "delivered"})
        bad["content"] = json.dumps({"signature": json.loads(bad["content"])["signature"]}).encode()
        assert (await hooks.post(world.url("mailgun"), **bad)).status_code == 400
        got = samples((await hooks.get("/metrics")).text)
    events = "switchboard_webhook_events_total"
    assert got[(events, (("outcome", "applied"), ("provider", "mailgun")))] == 1
    assert got[(events, (("outcome", "duplicate"), ("provider", "mailgun")))] == 1
    rejected = "switchboard_webhook_rejections_total"
    assert got[(rejected, (("provider", "mailgun"), ("reason", "signature")))] == 1
    assert got[(rejected, (("provider", "mailgun"), ("reason", "malformed")))] == 1

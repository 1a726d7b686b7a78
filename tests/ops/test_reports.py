from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select

from server.db import Database, utcnow
from server.events.models import Event
from server.reports import job
from tests.conftest import ClientFactory
from tests.ops.history import add_message


async def _workspace_of(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/v1/me")).json()["workspace_id"])


async def _report_events(db: Database, ws: int) -> list[dict[str, Any]]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(Event).where(Event.workspace_id == ws, Event.type == "report.updated").order_by(Event.id)
        )
        return [e.data for e in rows.scalars()]


async def test_daily_counts_per_day_and_channel(make_client: ClientFactory, db: Database) -> None:
    viewer = await make_client("viewer")
    other = await make_client("viewer", workspace="Other")
    ws = await _workspace_of(viewer)
    other_ws = await _workspace_of(other)
    today = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    if utcnow() < today:  # before noon UTC: keep "today" in the past
        today = utcnow() - dt.timedelta(seconds=1)
    yday = today - dt.timedelta(days=1)
    # Sent yesterday, delivered today; it counts on each day for what happened on it.
    await add_message(db, ws, history=[("queued", yday), ("sent", yday), ("delivered", today)])
    await add_message(db, ws, history=[("sent", yday), ("bounced", yday)])
    await add_message(db, ws, history=[("sent", today), ("sent", today)])  # a repeated event counts once
    await add_message(db, ws, channel="sms", history=[("failed", today)])
    await add_message(db, ws, history=[("opened", today)])  # an engagement event, not counted
    await add_message(db, other_ws, history=[("sent", today)])

    changed = await job.run_once(db)
    assert set(changed) == {ws, other_ws}

    r = await viewer.get(
        "/api/v1/reports/daily", params={"from": yday.date().isoformat(), "to": today.date().isoformat()}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["from"] == yday.date().isoformat() and body["to"] == today.date().isoformat()
    zero = {"sent": 0, "delivered": 0, "bounced": 0, "failed": 0}
    assert body["items"] == [
        {"day": yday.date().isoformat(), "channel": "email", **zero, "sent": 2, "bounced": 1},
        {"day": today.date().isoformat(), "channel": "email", **zero, "sent": 1, "delivered": 1},
        {"day": today.date().isoformat(), "channel": "sms", **zero, "failed": 1},
    ]
    # Another workspace sees only its own figures.
    r = await other.get("/api/v1/reports/daily")
    assert [(i["channel"], i["sent"]) for i in r.json()["items"]] == [("email", 1)]


async def test_today_moves_live_with_report_updated_events(make_client: ClientFactory, db: Database) -> None:
    admin = await make_client("admin")
    ws = await _workspace_of(admin)
    now = utcnow()
    await add_message(db, ws, history=[("sent", now)])
    await job.ReportJob(db).tick()
    events = await _report_events(db, ws)
    assert len(events) == 1
    assert events[0]["rows"] == [
        {
            "day": now.date().isoformat(),
            "channel": "email",
            "sent": 1,
            "delivered": 0,
            "bounced": 0,
            "failed": 0,
        }
    ]

    # Nothing changed: no event.
    assert await job.run_once(db) == {}
    assert len(await _report_events(db, ws)) == 1

    # One more delivery: today's row moves, through the on-demand endpoint this time.
    await add_message(db, ws, history=[("sent", now), ("delivered", utcnow())])
    r = await admin.post("/api/v1/reports/recompute", json={})
    assert r.status_code == 200, r.text
    today_row = [i for i in r.json()["items"] if i["day"] == utcnow().date().isoformat()]
    assert today_row[0]["delivered"] == 1
    events = await _report_events(db, ws)
    assert len(events) == 2 and events[1]["rows"][0]["delivered"] == 1


async def test_range_is_validated_and_roles_enforced(make_client: ClientFactory) -> None:
    viewer = await make_client("viewer")
    r = await viewer.get("/api/v1/reports/daily", params={"from": "2026-02-01", "to": "2026-01-01"})
    assert r.status_code == 422
    r = await viewer.get("/api/v1/reports/daily", params={"from": "2020-01-01", "to": "2026-01-01"})
    assert r.status_code == 422
    r = await viewer.get("/api/v1/reports/daily", params={"from": "yesterday"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.from"
    r = await viewer.get("/api/v1/reports/daily")
    assert r.status_code == 200 and r.json()["items"] == []
    assert (await viewer.post("/api/v1/reports/recompute", json={})).status_code == 403
    anonymous = await make_client(None)
    assert (await anonymous.get("/api/v1/reports/daily")).status_code == 401


async def test_concurrent_recomputes_emit_each_change_once(make_client: ClientFactory, db: Database) -> None:
    import asyncio

    admin = await make_client("admin")
    ws = await _workspace_of(admin)
    for _ in range(3):
        await add_message(db, ws, history=[("sent", utcnow())])
    results = await asyncio.gather(*(job.run_once(db) for _ in range(4)))
    assert sum(1 for r in results if r) == 1  # one of them did the change, the others saw it done
    assert len(await _report_events(db, ws)) == 1
    r = await admin.get("/api/v1/reports/daily")
    assert [i["sent"] for i in r.json()["items"]] == [3]

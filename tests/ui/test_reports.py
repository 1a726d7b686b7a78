"""The reports page and `GET /api/v1/reports/daily` give the same figures for the same days."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx

from server.db import utcnow
from server.messages.models import Message, MessageEvent
from server.providers.models import Provider
from server.reports import job
from server.webhooks.parse import ProviderEvent
from server.webhooks.service import apply_events
from tests.ui.conftest import BrowserFactory

Figures = dict[tuple[str, str], list[int]]


async def _page(c: httpx.AsyncClient, first: dt.date, last: dt.date) -> Figures:
    r = await c.get("/reports", params={"from": first.isoformat(), "to": last.isoformat()})
    assert r.status_code == 200, r.text
    rows = re.findall(r"<tr><td>([\d-]+)</td><td>(\w+)</td>(.*?)</tr>", r.text)
    return {(d, ch): [int(n) for n in re.findall(r'class="num">(\d+)<', cells)] for d, ch, cells in rows}


async def _api(c: httpx.AsyncClient, first: dt.date, last: dt.date) -> Figures:
    r = await c.get("/api/v1/reports/daily", params={"from": first.isoformat(), "to": last.isoformat()})
    assert r.status_code == 200, r.text
    return {
        (i["day"], i["channel"]): [i["sent"], i["delivered"], i["bounced"], i["failed"]]
        for i in r.json()["items"]
    }


async def test_page_and_api_agree_on_a_day_with_late_status_events(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    ws = int((await c.get("/api/v1/me")).json()["workspace_id"])
    db = app.state.services.db
    day2 = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    if utcnow() < day2:  # before noon UTC: keep "today" in the past
        day2 = utcnow() - dt.timedelta(seconds=1)
    day1 = day2 - dt.timedelta(days=1)

    # Day 1: a message is created and sent; the report job rolls the days up.
    async with db.transaction() as s:
        provider = Provider(
            workspace_id=ws,
            name="sandbox",
            kind="sandbox",
            channel="email",
            priority=1,
            config={},
            webhook_key="k",
        )
        s.add(provider)
        await s.flush()
        late = Message(
            workspace_id=ws,
            channel="email",
            to_address="a@example.test",
            status="sent",
            provider_id=provider.id,
            provider_kind="sandbox",
            provider_message_id="pm-late",
            created_at=day1,
            sent_at=day1,
        )
        s.add(late)
        await s.flush()
        s.add_all(
            MessageEvent(workspace_id=ws, message_id=late.id, status=st, at=day1)
            for st in ("queued", "sending", "sent")
        )
    await job.run_once(db, first=day1.date(), last=day2.date())

    # Day 2: its delivery webhook arrives late, and twice (a provider retry); another message is
    # created and sent, and the job has not ticked since.
    delivered = ProviderEvent(
        provider_event_id="ev-late",
        provider_message_id="pm-late",
        our_message_id=None,
        status="delivered",
        kind="delivered",
        reason=None,
        recipient=None,
        suppress=None,
        occurred_at=day2,
        raw={},
    )
    for _ in range(2):
        async with db.transaction() as s:
            await apply_events(s, provider=provider, events=[delivered])
    async with db.transaction() as s:
        fresh = Message(
            workspace_id=ws, channel="email", to_address="b@example.test", status="sent", created_at=day2
        )
        s.add(fresh)
        await s.flush()
        s.add(MessageEvent(workspace_id=ws, message_id=fresh.id, status="sent", at=day2))

    first, last = day1.date(), day2.date()
    assert await _page(c, first, last) == await _api(c, first, last)

    await job.run_once(db, first=first, last=last)
    page, api = await _page(c, first, last), await _api(c, first, last)
    assert (
        page
        == api
        == {
            (first.isoformat(), "email"): [1, 0, 0, 0],  # sent on day 1, where it was created
            (last.isoformat(), "email"): [1, 1, 0, 0],  # the late delivery counts once, on day 2
        }
    )

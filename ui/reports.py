"""Reports: daily sent/delivered/bounced/failed per channel, as a server-rendered SVG chart and a
table. Days the daily report job has rolled up come from `report_daily`; other days are counted
from the messages themselves."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.db import utcnow
from server.messages.models import Message
from server.reports.days import parse_day
from server.reports.models import DailyReport
from ui.pages import page
from ui.web import Viewer, render, services

METRICS = ("sent", "delivered", "bounced", "failed")
CHANNELS = ("email", "sms", "whatsapp", "chat")
DEFAULT_DAYS = 14
MAX_DAYS = 92

Counts = dict[str, int]


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def parse_range(request: Request) -> tuple[dt.date, dt.date]:
    today = utcnow().date()
    try:
        to = parse_day(request.query_params.get("to", "")) if request.query_params.get("to") else today
        start = (
            parse_day(request.query_params["from"])
            if request.query_params.get("from")
            else to - dt.timedelta(days=DEFAULT_DAYS - 1)
        )
    except ValueError:
        to, start = today, today - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > to:
        start, to = to, start
    if (to - start).days >= MAX_DAYS:
        start = to - dt.timedelta(days=MAX_DAYS - 1)
    return start, to


async def daily(
    session: Any, workspace_id: int, start: dt.date, to: dt.date
) -> dict[tuple[dt.date, str], Counts]:
    out: dict[tuple[dt.date, str], Counts] = {}
    rolled = await session.execute(
        select(DailyReport).where(
            DailyReport.workspace_id == workspace_id, DailyReport.day >= start, DailyReport.day <= to
        )
    )
    for r in rolled.scalars():
        out[(r.day, r.channel)] = {m: getattr(r, m) for m in METRICS}
    rolled_days = {d for d, _c in out}
    day = func.date(Message.created_at)
    lo = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    hi = dt.datetime.combine(to + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    rows = await session.execute(
        select(
            day,
            Message.channel,
            func.sum(case((Message.sent_at.is_not(None), 1), else_=0)),
            func.sum(case((Message.status == "delivered", 1), else_=0)),
            func.sum(case((Message.status == "bounced", 1), else_=0)),
            func.sum(case((Message.status == "failed", 1), else_=0)),
        )
        .where(Message.workspace_id == workspace_id, Message.created_at >= lo, Message.created_at < hi)
        .group_by(day, Message.channel)
    )
    for d, channel, *values in rows:
        key = (_day(d), channel)
        if key[0] in rolled_days:
            continue
        out[key] = {m: int(v or 0) for m, v in zip(METRICS, values, strict=True)}
    return out


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    metric: str
    value: int
    day: dt.date


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar_w: float
    bars: list[Bar]
    labels: list[tuple[float, str]]
    ticks: list[tuple[float, int]]
    top: int


def chart(days: list[dt.date], totals: dict[dt.date, Counts]) -> Chart:
    """Grouped bars: per day one bar per metric, on a shared scale."""
    width, height, left, bottom, top_pad = 760, 260, 40, 30, 10
    group = (width - left) / max(len(days), 1)
    bar_w = max(group / (len(METRICS) + 1), 1.0)
    peak = max([v for c in totals.values() for v in c.values()] + [1])
    scale = (height - bottom - top_pad) / peak
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    every = max(1, len(days) // 7)
    for i, d in enumerate(days):
        x0 = left + i * group + bar_w / 2
        for j, m in enumerate(METRICS):
            v = totals.get(d, {}).get(m, 0)
            h = v * scale
            bars.append(Bar(round(x0 + j * bar_w, 1), round(height - bottom - h, 1), round(h, 1), m, v, d))
        if i % every == 0:
            labels.append((round(x0 + bar_w * 2, 1), d.strftime("%m-%d")))
    values = sorted({0, peak // 2, peak})
    ticks = [(round(height - bottom - v * scale, 1), v) for v in values]
    return Chart(width, height, round(bar_w * 0.9, 1), bars, labels, ticks, peak)


@page()
async def reports_page(request: Request, v: Viewer) -> Response:
    start, to = parse_range(request)
    channel = request.query_params.get("channel", "")
    channel = channel if channel in CHANNELS else ""
    async with services(request).db.transaction() as s:
        data = await daily(s, v.workspace_id, start, to)
    days = [start + dt.timedelta(days=i) for i in range((to - start).days + 1)]
    totals: dict[dt.date, Counts] = {}
    for (d, ch), counts in data.items():
        if channel and ch != channel:
            continue
        t = totals.setdefault(d, dict.fromkeys(METRICS, 0))
        for m in METRICS:
            t[m] += counts[m]
    table = sorted(((d, ch, c) for (d, ch), c in data.items() if not channel or ch == channel), reverse=True)
    return render(
        request,
        "reports.html",
        {
            "v": v,
            "start": start,
            "to": to,
            "channel": channel,
            "channels": CHANNELS,
            "metrics": METRICS,
            "chart": chart(days, totals),
            "table": table,
        },
    )


routes = [Route("/reports", reports_page, methods=["GET"])]

"""Reports: daily sent/delivered/bounced/failed per channel, as a server-rendered SVG chart and a
table. The figures are `GET /api/v1/reports/daily`'s, read through the same service function
(`server.reports.service.read`; the definition is in docs/operations.md, "Daily reports")."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.db import utcnow
from server.reports import service as reports
from server.reports.days import parse_day
from ui.pages import page
from ui.web import Viewer, render, services

METRICS = reports.COUNTED
CHANNELS = ("email", "sms", "whatsapp", "chat")
DEFAULT_DAYS = 14
MAX_DAYS = 92

Counts = dict[str, int]


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
    session: AsyncSession, workspace_id: int, start: dt.date, to: dt.date
) -> dict[tuple[dt.date, str], Counts]:
    """The API's rows of `start`..`to`, by (day, channel)."""
    rows = await reports.read(session, workspace_id=workspace_id, first=start, last=to)
    return {(r.day, r.channel): {m: getattr(r, m) for m in METRICS} for r in rows}


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

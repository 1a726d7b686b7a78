"""The delivery board (landing page) and the message page with its timeline."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.contacts.models import Contact
from server.db import utcnow
from server.errors import Problem
from server.messages.models import Message, MessageEvent, MessageStatus
from ui.pages import page
from ui.web import Viewer, render, services

CHANNELS = ("email", "sms", "whatsapp", "chat")
STATUSES = tuple(s.value for s in MessageStatus)
PROVIDER_KINDS = ("sandbox", "smtp", "sendgrid", "mailgun", "twilio", "whatsapp", "slack")
STREAM_LIMIT = 50
COUNT_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True)
class BoardFilter:
    channel: str = ""
    status: str = ""
    provider: str = ""

    @classmethod
    def from_request(cls, request: Request) -> BoardFilter:
        q = request.query_params
        channel = q.get("channel", "")
        status = q.get("status", "")
        provider = q.get("provider", "")
        return cls(
            channel=channel if channel in CHANNELS else "",
            status=status if status in STATUSES else "",
            provider=provider if provider in PROVIDER_KINDS else "",
        )

    def apply(self, stmt: Any) -> Any:
        if self.channel:
            stmt = stmt.where(Message.channel == self.channel)
        if self.status:
            stmt = stmt.where(Message.status == self.status)
        if self.provider:
            stmt = stmt.where(Message.provider_kind == self.provider)
        return stmt


async def counters(session: Any, workspace_id: int) -> dict[str, Any]:
    """Messages of the last 24 hours by status and by channel."""
    since = utcnow() - COUNT_WINDOW
    rows = await session.execute(
        select(Message.status, Message.channel, func.count())
        .where(Message.workspace_id == workspace_id, Message.created_at >= since)
        .group_by(Message.status, Message.channel)
    )
    by_status = dict.fromkeys(STATUSES, 0)
    by_channel = dict.fromkeys(CHANNELS, 0)
    total = 0
    for status, channel, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        by_channel[channel] = by_channel.get(channel, 0) + n
        total += n
    return {"by_status": by_status, "by_channel": by_channel, "total": total}


async def recent(session: Any, workspace_id: int, f: BoardFilter, limit: int = STREAM_LIMIT) -> list[Any]:
    stmt = (
        select(Message, Contact.name)
        .outerjoin(Contact, Contact.id == Message.contact_id)
        .where(Message.workspace_id == workspace_id)
    )
    rows = await session.execute(f.apply(stmt).order_by(Message.id.desc()).limit(limit))
    return [{"m": m, "contact_name": name} for m, name in rows]


@page()
async def board(request: Request, v: Viewer) -> Response:
    f = BoardFilter.from_request(request)
    # The event head is read before the data, so events that race the page are replayed, never lost.
    head = v.workspace.event_seq
    async with services(request).db.transaction() as s:
        data = {"counts": await counters(s, v.workspace_id), "rows": await recent(s, v.workspace_id, f)}
    return render(
        request,
        "board.html",
        {
            "v": v,
            "f": f,
            "head": head,
            "channels": CHANNELS,
            "statuses": STATUSES,
            "kinds": PROVIDER_KINDS,
            **data,
        },
    )


@page()
async def stream_fragment(request: Request, v: Viewer) -> Response:
    """The stream rows for the current filters (htmx), with the head they are current to."""
    f = BoardFilter.from_request(request)
    head = v.workspace.event_seq
    async with services(request).db.transaction() as s:
        rows = await recent(s, v.workspace_id, f)
    return render(request, "_stream.html", {"rows": rows, "head": head})


@page()
async def counters_fragment(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        counts = await counters(s, v.workspace_id)
    return render(request, "_counters.html", {"counts": counts})


async def _message(request: Request, v: Viewer) -> dict[str, Any]:
    try:
        message_id = int(request.path_params["message_id"])
    except ValueError:
        raise Problem(404, "No such message.") from None
    async with services(request).db.transaction() as s:
        m = await s.get(Message, message_id)
        if m is None or m.workspace_id != v.workspace_id:
            raise Problem(404, "No such message.")
        contact = await s.get(Contact, m.contact_id) if m.contact_id else None
        events = list(
            (
                await s.execute(
                    select(MessageEvent).where(MessageEvent.message_id == m.id).order_by(MessageEvent.id)
                )
            ).scalars()
        )
    return {"m": m, "contact": contact, "events": events}


@page()
async def message_page(request: Request, v: Viewer) -> Response:
    head = v.workspace.event_seq
    data = await _message(request, v)
    return render(request, "message.html", {"v": v, "head": head, **data})


@page()
async def timeline_fragment(request: Request, v: Viewer) -> Response:
    data = await _message(request, v)
    return render(request, "_timeline.html", data)


routes = [
    Route("/", board, methods=["GET"]),
    Route("/board/stream", stream_fragment, methods=["GET"]),
    Route("/board/counters", counters_fragment, methods=["GET"]),
    Route("/messages/{message_id:int}", message_page, methods=["GET"]),
    Route("/messages/{message_id:int}/timeline", timeline_fragment, methods=["GET"]),
]

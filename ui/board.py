"""The delivery board (landing page) and the message page with its timeline."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import Problem
from server.messages import board as messages_board
from server.messages.board import CHANNELS, STATUSES
from server.messages.service import MessageNotFound
from ui.pages import page
from ui.web import Viewer, render, services

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


async def counters(session: AsyncSession, workspace_id: int) -> dict[str, Any]:
    """Messages of the last 24 hours by status and by channel."""
    return await messages_board.counters(session, workspace_id=workspace_id, window=COUNT_WINDOW)


async def recent(
    session: AsyncSession, workspace_id: int, f: BoardFilter, limit: int = STREAM_LIMIT
) -> list[dict[str, Any]]:
    return await messages_board.recent(
        session,
        workspace_id=workspace_id,
        channel=f.channel,
        status=f.status,
        provider=f.provider,
        limit=limit,
    )


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
        try:
            view = await messages_board.message_view(s, workspace_id=v.workspace_id, message_id=message_id)
        except MessageNotFound:
            raise Problem(404, "No such message.") from None
    return {"m": view.message, "contact": view.contact, "events": view.events}


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

"""Campaigns: the list with each one's progress, a new campaign for a search, and cancel.

The contacts list's "Send a campaign to all N matching" lands here with its `q`/`tag`: the new
campaign's audience is that search, counted again when it starts (issue 15's "add to campaign"
for a selection). The forms write through the JSON API (`static/forms.js`): `POST /api/v1/campaigns`
and `POST /api/v1/campaigns/{id}/cancel`, with their roles, validation and audit. While a shown
campaign is expanding its rows are read again every few seconds (htmx), rather than followed on
`board`, whose every message event this page has no use for."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import Problem
from server.messages import campaigns
from server.pagination import decode_cursor, encode_cursor
from server.templates import service as templates_service
from ui.contacts import matching, search_of
from ui.pages import page
from ui.web import Viewer, render, services

PAGE_SIZE = 25
POLL_S = 3  # how often expanding campaigns' rows are read again


async def _rows(s: AsyncSession, request: Request, v: Viewer) -> dict[str, Any]:
    try:
        before = decode_cursor(request.query_params.get("cursor") or None)
    except Problem:
        before = None
    rows = await campaigns.list_campaigns(
        s, workspace_id=v.workspace_id, before_id=before, limit=PAGE_SIZE + 1
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    names = await templates_service.names_of(
        s, workspace_id=v.workspace_id, template_ids={c.template_id for c in rows}
    )
    return {
        "v": v,
        "campaigns": rows,
        "template_names": names,
        "cursor": request.query_params.get("cursor") or "",
        "next_cursor": encode_cursor(rows[-1].id) if more else None,
        "expanding": any(c.status == "expanding" for c in rows),
        "poll_s": POLL_S,
    }


@page()
async def campaigns_page(request: Request, v: Viewer) -> Response:
    q, tag = search_of(request)
    async with services(request).db.transaction() as s:
        context = {
            "templates": (
                await templates_service.list_by_name(s, workspace_id=v.workspace_id, limit=500)
                if v.can_write
                else []
            ),
            "q": q or "",
            "tag": tag or "",
            "matching": await matching(s, v, q, tag),
            **await _rows(s, request, v),
        }
    return render(request, "campaigns.html", context)


@page()
async def campaign_rows(request: Request, v: Viewer) -> Response:
    """The list's rows alone, for the page's polling while a campaign expands."""
    async with services(request).db.transaction() as s:
        context = await _rows(s, request, v)
    return render(request, "_campaign_rows.html", context)


routes = [
    Route("/campaigns", campaigns_page, methods=["GET"]),
    Route("/campaigns/rows", campaign_rows, methods=["GET"]),
]

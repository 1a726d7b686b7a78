"""The suppression list: search it, add an address (agents), lift one recorded by mistake (admins).

The forms write through the JSON API (`static/forms.js`), like the other admin pages."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import Problem
from server.pagination import decode_cursor, encode_cursor
from server.suppressions import service
from server.suppressions.schemas import SuppressionQuery
from ui.pages import page
from ui.web import Viewer, render, services

PAGE_SIZE = 50


def _query(request: Request) -> SuppressionQuery:
    """The page's filters, read like the API's (`GET /api/v1/suppressions`); filters the API would
    refuse (an unknown reason, an unreadable cursor) are dropped, as the contacts page does (a NUL
    never gets here: `page()` answers it with a 422 page)."""
    params = request.query_params
    raw = {
        "q": (params.get("q") or "").strip()[:320] or None,
        "reason": params.get("reason") if params.get("reason") in service.REASONS else None,
        "cursor": params.get("cursor") or None,
        "limit": PAGE_SIZE,
    }
    try:
        return SuppressionQuery.model_validate(raw)
    except ValidationError:
        return SuppressionQuery(limit=PAGE_SIZE)


@page()
async def suppressions_page(request: Request, v: Viewer) -> Response:
    query = _query(request)
    q, reason = query.q, query.reason
    try:
        before = decode_cursor(query.cursor)
    except Problem:
        before = None
    async with services(request).db.transaction() as s:
        rows = await service.list_suppressions(
            s, workspace_id=v.workspace_id, q=q, reason=reason, before_id=before, limit=PAGE_SIZE + 1
        )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(
        request,
        "suppressions.html",
        {
            "v": v,
            "rows": rows,
            "q": q or "",
            "reason": reason or "",
            "reasons": service.REASONS,
            "next_cursor": encode_cursor(rows[-1].id) if more else None,
            "here": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        },
    )


routes = [Route("/suppressions", suppressions_page, methods=["GET"])]

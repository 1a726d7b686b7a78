"""Identity pages: API keys and the audit log (admin), and "your sessions" (everyone).

Server-rendered forms posting to the page routes (CSRF-checked by `page()`), which go through the
same functions as the API, so every change is audited the same way."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from server.api import Ctx
from server.apikeys import api as keys_api
from server.apikeys import service as keys
from server.apikeys.scopes import SCOPES
from server.audit import api as audit_api
from server.auth import service as auth_service
from server.errors import Problem
from server.sessions import service as sessions
from ui.pages import page
from ui.web import Viewer, render, services

AUDIT_PAGE = 50


def _ctx(request: Request, v: Viewer) -> Ctx[Any]:
    return Ctx(request=request, principal=v.principal, body=None)


async def _names(request: Request, v: Viewer) -> dict[int, str]:
    async with services(request).db.transaction() as s:
        return await auth_service.user_names(s, v.workspace_id)


async def _keys_page(
    request: Request, v: Viewer, *, created: Any = None, error: str = "", status: int = 200
) -> Response:
    async with services(request).db.transaction() as s:
        rows = await keys.list_keys(s, workspace_id=v.workspace_id, after_id=None, limit=500)
    names = await _names(request, v)
    return render(
        request,
        "api_keys.html",
        {"v": v, "keys": rows, "names": names, "scopes": SCOPES, "created": created, "error": error},
        status=status,
    )


@page(role="admin")
async def api_keys_page(request: Request, v: Viewer) -> Response:
    return await _keys_page(request, v)


@page(role="admin")
async def create_api_key(request: Request, v: Viewer) -> Response:
    form = await request.form()
    data: dict[str, Any] = {"name": str(form.get("name", "")).strip(), "scopes": form.getlist("scopes")}
    if form.get("expires_at"):
        data["expires_at"] = f"{form.get('expires_at')}T23:59:59Z"
    try:
        body = keys_api.ApiKeyIn.model_validate(data)
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'key'}: {e['msg']}" for e in exc.errors())
        return await _keys_page(request, v, error=why, status=422)
    key, secret = await keys_api.create_recorded(_ctx(request, v), body)
    return await _keys_page(request, v, created={"key": key, "secret": secret}, status=201)


@page(role="admin")
async def revoke_api_key(request: Request, v: Viewer) -> Response:
    await keys_api.revoke(_ctx(request, v), int(request.path_params["key_id"]))
    return RedirectResponse("/api-keys", status_code=303)


@page(role="admin")
async def audit_page(request: Request, v: Viewer) -> Response:
    raw = {k: val for k, val in request.query_params.items() if val}
    try:
        q = audit_api.AuditQuery.model_validate({**raw, "limit": AUDIT_PAGE})
    except ValidationError as exc:
        raise Problem(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    found = await audit_api.query_log(_ctx(request, v), q)
    names = await _names(request, v)
    filters = {k: raw.get(k, "") for k in ("actor", "action", "from", "to")}
    return render(
        request,
        "audit.html",
        {"v": v, "items": found.items, "next_cursor": found.next_cursor, "names": names, "filters": filters},
    )


@page()
async def sessions_page(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        rows = await sessions.list_sessions(s, user_id=v.user.id)
    return render(request, "sessions.html", {"v": v, "sessions": rows, "current": v.principal.session_id})


@page()
async def revoke_session(request: Request, v: Viewer) -> Response:
    family = str((await request.form()).get("session_id", ""))[:64]
    async with services(request).db.transaction() as s:
        if not await sessions.revoke_sessions(s, user_id=v.user.id, family_id=family):
            raise Problem(404, "No such session.")
    await services(request).access_ended(session_ids=[family])
    return RedirectResponse("/login" if family == v.principal.session_id else "/sessions", status_code=303)


@page()
async def revoke_all_sessions(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        await sessions.revoke_sessions(s, user_id=v.user.id)
    await services(request).access_ended(user_id=v.user.id)
    return RedirectResponse("/login", status_code=303)


routes = [
    Route("/api-keys", api_keys_page, methods=["GET"]),
    Route("/api-keys", create_api_key, methods=["POST"]),
    Route("/api-keys/{key_id:int}/revoke", revoke_api_key, methods=["POST"]),
    Route("/audit", audit_page, methods=["GET"]),
    Route("/sessions", sessions_page, methods=["GET"]),
    Route("/sessions/revoke-all", revoke_all_sessions, methods=["POST"]),
    Route("/sessions/revoke", revoke_session, methods=["POST"]),
]

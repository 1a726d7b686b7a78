"""What every dashboard page shares: the Jinja2 environment (autoescaped), the signed-in user
from the session cookies (refreshed when the access token has expired), and CSRF for forms."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.auth import service as auth_service
from server.auth.api import clear_session_cookies, set_session_cookies
from server.auth.models import Role, User
from server.auth.principal import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    Principal,
    authenticate,
    check_csrf,
    principal_from_token,
)
from server.auth.tokens import AccessClaims
from server.errors import Problem
from server.state import services_of
from server.workspaces.models import Workspace

if TYPE_CHECKING:
    from server.services import Services

# Pages run only our own scripts and styles: no inline script, so injected markup cannot execute.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
TEMPLATES = Path(__file__).resolve().parent / "templates"

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its extension: user data is always escaped
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


env.filters["when"] = _when
env.filters["iso"] = _iso


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a page."""

    principal: Principal
    user: User
    workspace: Workspace
    csrf: str

    @property
    def can_write(self) -> bool:
        return self.principal.role.rank >= Role.agent.rank

    @property
    def is_admin(self) -> bool:
        return self.principal.role is Role.admin

    @property
    def workspace_id(self) -> int:
        return self.principal.workspace_id


class LoginRequired(Exception):
    """Raised by `viewer()`: the page answers with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


@dataclass
class Renewed:
    access: str
    refresh: str


def services(request: Request) -> Services:
    """The app's composition root (`server.services.Services`)."""
    return services_of(request.app)


def _next_url(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return path


async def renew(request: Request) -> tuple[Principal, Renewed] | None:
    """Spend the refresh cookie for a new pair; None when it is missing, spent or expired."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        return None
    svc = services(request)
    reused: str | None = None
    async with svc.db.transaction() as s:
        try:
            issued = await auth_service.rotate_refresh(
                s,
                token=token,
                ttl_s=svc.settings.refresh_token_ttl_s,
                user_agent=request.headers.get("user-agent"),
                ip=request.client.host if request.client else None,
            )
        except auth_service.RefreshReused as exc:
            issued, reused = None, exc.family_id  # caught inside, so the family's revocation is committed
        except auth_service.AuthError:
            issued = None
    if reused is not None:
        await svc.access_ended(session_ids=[reused])
    if issued is None:
        return None
    user = issued.user
    access = svc.tokens.issue(
        AccessClaims(user.id, user.workspace_id, user.role, session_id=issued.family_id)
    )
    principal = Principal(
        user.id, user.workspace_id, Role(user.role), via_cookie=True, session_id=issued.family_id
    )
    return principal, Renewed(access, issued.token)


async def viewer(request: Request, *, role: str = "viewer", csrf_form: str | None = None) -> Viewer:
    """The signed-in user, or LoginRequired. An expired access cookie is renewed with the refresh
    cookie once (the new cookies are set on the response by `page()`); unsafe methods check CSRF."""
    renewed: Renewed | None = None
    try:
        principal = await authenticate(request, csrf_token=csrf_form)
    except Problem as exc:
        if exc.status != 401:
            raise
        if request.headers.get("hx-request") and request.cookies.get(REFRESH_COOKIE):
            # Fragments leave the renewal to the page script (one at a time per page): two
            # requests spending the same refresh token at once would revoke the session.
            raise
        got = await renew(request)
        if got is None:
            raise LoginRequired(_next_url(request)) from None
        principal, renewed = got
        if request.method not in ("GET", "HEAD"):
            check_csrf(request, csrf_form or request.headers.get("x-csrf-token"))
    svc = services(request)
    async with svc.db.transaction() as s:
        member = await auth_service.active_member(
            s, user_id=principal.user_id, workspace_id=principal.workspace_id
        )
    if member is None:
        raise LoginRequired(_next_url(request))
    user, workspace = member
    if principal.role.rank < Role(role).rank:
        raise Problem(403, f"This page needs the {role} role; you are {principal.role.value}.")
    csrf = request.cookies.get(CSRF_COOKIE, "")
    v = Viewer(principal, user, workspace, csrf)
    request.state.renewed = renewed
    return v


def _apply_renewal(request: Request, response: Response) -> None:
    renewed: Renewed | None = getattr(request.state, "renewed", None)
    if renewed is not None:
        set_session_cookies(
            response, services(request).settings, access=renewed.access, refresh=renewed.refresh
        )


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    html = env.get_template(name).render(request=request, **context)
    response = HTMLResponse(html, status_code=status, headers=headers)
    _apply_renewal(request, response)
    response.headers.setdefault("cache-control", "no-store")
    response.headers.setdefault("content-security-policy", CSP)
    return response


def to_login(request: Request, next_url: str) -> Response:
    """To the login page: a plain redirect, or `HX-Redirect` for an htmx request."""
    target = "/login?next=" + quote(next_url, safe="/")
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    clear_session_cookies(response)
    return response


def ensure_csrf_cookie(request: Request, response: Response) -> str:
    """The CSRF token for a page shown before sign-in (the login form)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = secrets.token_urlsafe(24)
        secure = bool(services(request).settings.cookie_secure)
        response.set_cookie(CSRF_COOKIE, token, httponly=False, samesite="strict", secure=secure, path="/")
    return token


async def user_names(session: AsyncSession, workspace_id: int) -> dict[int, str]:
    return await auth_service.user_names(session, workspace_id)


def safe_next(raw: str | None) -> str:
    """Only a path on this site: never `//host` or a scheme (open redirect)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


def principal_or_none(request: Request) -> Principal | None:
    try:
        return principal_from_token(request, request.cookies.get(ACCESS_COOKIE), True)
    except Problem:
        return None

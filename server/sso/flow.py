"""The browser's OpenID Connect sign-in, with authlib's Starlette client.

`GET /sso/{workspace_slug}/login` sends the browser to the workspace's provider (authorization code
with PKCE S256, `state` and `nonce`; `?login_hint=` is passed on, so the provider can fill in the
email typed under the login page's "Continue with SSO"); `GET /sso/callback` exchanges the code,
and authlib checks the ID token: its signature against the provider's JWKS (an unknown `kid`
refetches the set once, so a key rotation at the provider just works), `iss`, `aud`, `exp`, `iat`
and `nonce`. Then the rules of `server.sso.service` decide who signs in, and the sign-in ends
exactly as a password sign-in does.

authlib keeps the flow's `state`, `nonce` and PKCE verifier in `request.session`. We have no session
middleware: that dict travels in one short-lived cookie (`sb_sso`, path `/sso`, HMAC-signed with
the secret key), so any web instance can finish a flow another one started, and it is spent (cleared)
by the callback whatever the outcome."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.sso import service
from server.sso.clients import OAuthError
from server.sso.models import SsoConfig
from server.state import services_of

log = logging.getLogger("switchboard.sso")

STATE_COOKIE = "sb_sso"
STATE_TTL_S = 600  # from "Sign in with …" to the provider's answer: ten minutes to type a password
MAX_LOGIN_HINT = 254  # an email address at most (RFC 5321's path limit)


def redirect_uri(request: Request) -> str:
    """The callback URL to register at the provider: under SWITCHBOARD_PUBLIC_URL when set."""
    base = services_of(request.app).settings.public_url or str(request.base_url)
    return base.rstrip("/") + "/sso/callback"


def login_hint(raw: str | None) -> str | None:
    """An email to pass to the provider as `login_hint`, or None when there is none (or it is not
    one we would pass on)."""
    hint = (raw or "").strip()
    return hint if hint and len(hint) <= MAX_LOGIN_HINT and hint.isprintable() else None


@dataclass(frozen=True, slots=True)
class LoginOption:
    """What the login page offers for `?workspace=<slug>` (and `&login_hint=` from "Continue with
    SSO"); `name` is empty when the slug has no SSO."""

    slug: str
    name: str = ""
    url: str = ""
    password_login: bool = True


async def login_option(request: Request) -> LoginOption | None:
    slug = request.query_params.get("workspace", "").strip().lower()[:63]
    if not slug:
        return None
    async with services_of(request.app).db.transaction() as s:
        found = await service.config_by_slug(s, slug=slug)
    if found is None:
        return LoginOption(slug)
    workspace, cfg = found
    url = f"/sso/{workspace.slug}/login"
    params = {
        "next": request.query_params.get("next"),
        "login_hint": login_hint(request.query_params.get("login_hint")),
    }
    query = {k: v for k, v in params.items() if v}
    if query:
        url += "?" + urlencode(query)
    return LoginOption(workspace.slug, cfg.display_name, url, cfg.password_login)


# --- the flow's state cookie ----------------------------------------------------------------


def _mac(secret: str, payload: bytes) -> str:
    key = hashlib.sha256(b"switchboard sso state|" + secret.encode()).digest()
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode().rstrip("=")


def seal(secret: str, data: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")
    return f"{payload}.{_mac(secret, payload.encode())}"


def unseal(secret: str, value: str | None) -> dict[str, Any] | None:
    """The sealed data, or None when missing, altered or expired."""
    if not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(secret, payload.encode())):
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] < time.time():
        return None
    return data


# --- the two routes ---------------------------------------------------------------------------


def _page(request: Request, status: int, detail: str, *, slug: str | None = None) -> Response:
    from ui.web import render

    context = {"v": None, "status": status, "detail": detail, "slug": slug}
    response = render(request, "sso_error.html", context, status=status)
    response.delete_cookie(STATE_COOKIE, path="/sso")
    return response


async def login(request: Request) -> Response:
    from ui.web import safe_next

    svc = services_of(request.app)
    slug = str(request.path_params["workspace_slug"])
    async with svc.db.transaction() as s:
        found = await service.config_by_slug(s, slug=slug)
    if found is None:
        return _page(request, 404, "This workspace has no single sign-on.")
    workspace, cfg = found
    app = svc.sso.client(cfg)
    session: dict[str, Any] = {}
    request.scope["session"] = session
    hint = login_hint(request.query_params.get("login_hint"))
    extra = {"login_hint": hint} if hint else {}
    try:
        response: Response = await app.authorize_redirect(request, redirect_uri(request), **extra)
    except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("sso login: %s unreachable for workspace %s: %s", cfg.issuer, workspace.id, exc)
        return _page(request, 502, f"{cfg.display_name} cannot be reached; try again later.", slug=slug)
    sealed = {
        "ws": workspace.id,
        "next": safe_next(request.query_params.get("next")),
        "session": session,
        "exp": int(time.time()) + STATE_TTL_S,
    }
    response.set_cookie(
        STATE_COOKIE,
        seal(svc.settings.secret_key, sealed),
        max_age=STATE_TTL_S,
        path="/sso",
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to us
        secure=bool(svc.settings.cookie_secure),
    )
    response.headers["cache-control"] = "no-store"
    return response


def _token_problem(exc: JoseError, cfg: SsoConfig) -> str:
    if isinstance(exc, ExpiredTokenError):
        return f"The sign-in from {cfg.display_name} has expired; please try again."
    if isinstance(exc, ClaimError):
        what = {
            "aud": "was issued to another application (audience)",
            "azp": "was issued to another application (audience)",
            "nonce": "does not answer this sign-in (nonce)",
            "iss": "comes from another issuer",
        }.get(exc.claim, f"has a wrong {exc.claim!r} claim")
        return f"The ID token from {cfg.display_name} {what}."
    return f"The ID token from {cfg.display_name} does not verify ({exc.error or 'invalid'})."


async def callback(request: Request) -> Response:
    from ui.session import signed_in

    svc = services_of(request.app)
    state = unseal(svc.settings.secret_key, request.cookies.get(STATE_COOKIE))
    if state is None:
        return _page(
            request, 400, "This sign-in expired or was started in another browser; please start again."
        )
    async with svc.db.transaction() as s:
        cfg = await service.config_of(s, workspace_id=int(state["ws"]))
    if cfg is None:
        return _page(request, 400, "Single sign-on was turned off for this workspace.")
    app = svc.sso.client(cfg)
    request.scope["session"] = state["session"]
    try:
        token = await app.authorize_access_token(
            request, claims_options={"iss": {"essential": True, "values": [cfg.issuer]}}
        )
    except OAuthError as exc:
        return _page(request, *_oauth_problem(exc, cfg))
    except JoseError as exc:
        log.info("sso: ID token refused for workspace %s: %r", cfg.workspace_id, exc)
        return _page(request, 401, _token_problem(exc, cfg))
    except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("sso callback: %s failed for workspace %s: %s", cfg.issuer, cfg.workspace_id, exc)
        return _page(request, 502, f"{cfg.display_name} cannot be reached; try again later.")
    claims = token.get("userinfo")
    if not claims:
        return _page(request, 401, f"{cfg.display_name} sent no ID token.")
    try:
        async with svc.db.transaction() as s:
            cfg = await service.config_of(s, workspace_id=cfg.workspace_id) or cfg
            user = await service.sign_in(s, cfg=cfg, claims=dict(claims))
    except service.SsoRefused as exc:
        return _page(request, exc.status, exc.detail)
    response = await signed_in(request, user, str(state.get("next") or "/"), method="oidc")
    response.delete_cookie(STATE_COOKIE, path="/sso")
    return response


def _oauth_problem(exc: OAuthError, cfg: SsoConfig) -> tuple[int, str]:
    error = getattr(exc, "error", "") or ""
    if error == "mismatching_state":
        return 400, "This sign-in does not match the one this browser started (state); please start again."
    if error == "invalid_grant":
        return 400, "This sign-in code was already used or has expired; please start again."
    if error == "access_denied":
        return 403, f"{cfg.display_name} did not let you sign in."
    return 502, f"{cfg.display_name} refused the sign-in ({error or 'error'})."


routes = [
    Route("/sso/callback", callback, methods=["GET"]),
    Route("/sso/{workspace_slug}/login", login, methods=["GET"]),
]

"""Who is calling: from `Authorization: Bearer` (an access token or an API key), or the browser's
cookie (then with a CSRF check)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from server.auth.models import Role
from server.auth.service import user_is_active
from server.auth.tokens import TokenError
from server.errors import Problem
from server.state import services_of

ACCESS_COOKIE = "sb_access"
REFRESH_COOKIE = "sb_refresh"
CSRF_COOKIE = "sb_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    workspace_id: int
    role: Role
    via_cookie: bool = False
    session_id: str | None = None  # the refresh-token family the access token was issued for
    expires_at: float | None = None  # the access token's `exp` (Unix time), or the API key's expiry
    # An API key acts for its workspace, not a person: `user_id` is then 0 and `by_user` None.
    api_key_id: int | None = None
    scopes: frozenset[str] = frozenset()

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(user_id=0, workspace_id=0, role=Role.viewer)

    @property
    def actor_kind(self) -> str:
        return "api_key" if self.api_key_id is not None else "user"

    @property
    def by_user(self) -> int | None:
        """The user to attribute a change to (None when an API key made it)."""
        return None if self.api_key_id is not None else self.user_id


def bearer_token(conn: HTTPConnection) -> tuple[str | None, bool]:
    """The access token and whether it came from the cookie."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    token = conn.query_params.get("token") if conn.scope["type"] == "websocket" else None
    if token:
        return token, False
    cookie = conn.cookies.get(ACCESS_COOKIE)
    return (cookie, True) if cookie else (None, False)


def principal_from_token(conn: HTTPConnection, token: str | None, via_cookie: bool = False) -> Principal:
    if not token:
        raise Problem(401, "Sign in first: send an access token.", headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = services_of(conn.app).tokens.verify(token)
    except TokenError:
        raise Problem(
            401,
            "The access token is invalid or expired.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    try:
        role = Role(claims.role)
    except ValueError:
        raise Problem(401, "The access token is invalid or expired.") from None
    return Principal(
        claims.user_id,
        claims.workspace_id,
        role,
        via_cookie,
        session_id=claims.session_id,
        expires_at=claims.expires_at,
    )


def check_csrf(conn: HTTPConnection, submitted: str | None) -> None:
    expected = conn.cookies.get(CSRF_COOKIE, "")
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise Problem(403, "Missing or wrong CSRF token; reload the page and try again.")


async def principal_from_key(conn: HTTPConnection, secret: str) -> Principal:
    """The principal of an API key: its workspace, its scopes; the role its scopes allow (`admin`
    scope: admin, else agent) — each operation's scope is checked on top (server/api.py)."""
    from server.apikeys import service as keys

    client = conn.client.host if conn.client else None
    access = await keys.check_key(services_of(conn.app).db, secret, ip=client)
    if access is None:
        raise Problem(
            401,
            "The API key is invalid, revoked or expired.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return Principal(
        user_id=0,
        workspace_id=access.workspace_id,
        role=Role.admin if "admin" in access.scopes else Role.agent,
        expires_at=access.expires_at.timestamp() if access.expires_at else None,
        api_key_id=access.id,
        scopes=access.scopes,
    )


async def authenticate(
    conn: HTTPConnection,
    *,
    csrf_token: str | None = None,
    is_active: Callable[[Principal], Awaitable[bool]] | None = None,
) -> Principal:
    """The caller, or 401. Cookie-authenticated unsafe requests must carry the CSRF token
    (header `X-CSRF-Token`, or `csrf_token` passed in from a form). `is_active` answers whether
    the token's user is still active (default: ask the database)."""
    token, via_cookie = bearer_token(conn)
    if token and not via_cookie and token.startswith("sb_live_"):
        return await principal_from_key(conn, token)
    principal = principal_from_token(conn, token, via_cookie)
    method = conn.scope.get("method", "GET")
    if via_cookie and method not in _SAFE:
        check_csrf(conn, csrf_token or conn.headers.get(CSRF_HEADER))
    # A token outlives a deactivation, a deletion or a change of role by up to its lifetime: ask
    # the database (a demoted admin's token must stop acting as an admin at once; the client
    # renews it and gets the new role).
    if is_active is not None:
        active = await is_active(principal)
    else:
        active = await user_is_active(
            services_of(conn.app).db, principal.user_id, principal.workspace_id, role=principal.role.value
        )
    if not active:
        raise Problem(
            401,
            "This user no longer exists, has been deactivated, or has a new role: sign in or renew the token.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


def require_bearer_secret(conn: HTTPConnection, secret: str) -> None:
    """401 unless the request carries `Authorization: Bearer <secret>` (e.g. a metrics scraper)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), secret.encode()):
        raise Problem(401, "Send the configured bearer token.", headers={"WWW-Authenticate": "Bearer"})


def require_role(principal: Principal, role: str) -> None:
    if principal.role.rank < Role(role).rank:
        raise Problem(403, f"This needs the {role} role; you are {principal.role.value}.")

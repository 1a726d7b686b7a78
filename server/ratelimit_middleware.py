"""Pure ASGI middleware applying the API rate limits (server.ratelimit) to `/api/` requests.

It never reads the body: failed sign-ins are limited by the login handlers
(`server.auth.signin_limits`). The client IP is the socket peer; behind nginx, uvicorn's
`proxy_headers` has already replaced it with the X-Forwarded-For address of a trusted proxy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.apikeys.service import is_key, key_id_of
from server.auth.principal import ACCESS_COOKIE
from server.auth.tokens import TokenError
from server.errors import Problem, problem_response
from server.ratelimit import Check, Decision
from server.state import services_of

if TYPE_CHECKING:
    from server.services import Services


def _token(scope: Scope) -> str | None:
    """The bearer token of the request (header, else the session cookie)."""
    token = None
    cookie = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
        elif name == b"cookie":
            cookie = value.decode("latin-1")
    if not token and cookie:
        prefix = ACCESS_COOKIE + "="
        for part in cookie.split(";"):
            part = part.strip()
            if part.startswith(prefix):
                token = part[len(prefix) :].strip('"')
    return token or None


async def _caller_bucket(scope: Scope, services: Services) -> str | None:
    """`user:{id}` for a valid access token, `key:{id}` for a known API key (its own bucket,
    standing or not: revocation is the handler's answer), else None."""
    token = _token(scope)
    if not token:
        return None
    if is_key(token):
        key_id = await key_id_of(services.db, token)
        return f"key:{key_id}" if key_id is not None else None
    try:
        return f"user:{services.tokens.verify(token).user_id}"
    except TokenError:
        return None  # the handler answers 401; the IP bucket still counts the attempt


def too_many(decision: Decision, what: str) -> Problem:
    return Problem(
        429,
        f"Too many requests ({what}); retry in {max(1, decision.retry_after_s)} s.",
        headers=decision.headers(),
    )


_UNSAFE = frozenset(("POST", "PUT", "PATCH", "DELETE"))


def _kind(scope: Scope) -> str | None:
    """Which limits apply: the API (every request), provider webhooks, and the dashboard's (and
    the unsubscribe page's) form posts; reading pages, health checks and /metrics are never limited."""
    if scope["type"] != "http":
        return None
    path: str = scope["path"]
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/webhooks/"):
        return "webhook"
    if scope["method"] in _UNSAFE:
        return "form"
    return None


class RateLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = _kind(scope)
        if kind is None:
            await self.app(scope, receive, send)
            return
        services = services_of(scope["app"])
        rl = services.ratelimits
        if not rl.enabled:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        checks: list[Check]
        if kind == "webhook":
            # Providers post from their own addresses, in floods when a campaign lands: a bucket of
            # its own, generous, so one caller cannot make every connection's lookups and writes.
            checks = [(f"webhook-ip:{ip}", rl.buckets.webhook_ip)]
        else:
            checks = [(f"ip:{ip}", rl.buckets.ip)]
            caller = await _caller_bucket(scope, services)
            if caller is not None:
                checks.append((caller, rl.buckets.user))
        decision = await rl.limiter.hit(checks)
        if decision is None:
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            services.metrics.rate_limited.labels(bucket=decision.bucket).inc()
            await problem_response(too_many(decision, decision.bucket))(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

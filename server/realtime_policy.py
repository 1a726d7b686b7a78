"""What the server tells the real-time layer about a live connection (realtime/guard.py): who the
caller is (an API key needs the `events:read` scope), whether its access still stands (a key:
not revoked, not expired), and the caller's op budget across sockets and instances.
The real-time layer takes both as callables, so it never imports the server."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from starlette.requests import HTTPConnection

from realtime import guard
from realtime.types import AccessCheck, Caller, OpBudget
from server.apikeys import service as keys
from server.apikeys.scopes import require_scope
from server.auth import service as auth_service
from server.auth.principal import Principal
from server.auth.principal import authenticate as authenticate_request
from server.auth.service import user_is_active
from server.db import Database
from server.ratelimit import Bucket, Limiter
from server.settings import Settings
from server.state import services_of


async def authenticate(conn: HTTPConnection) -> Principal:
    """The caller of /ws, long-poll or SSE: a user, or an API key with the `events:read` scope.
    Whether the user is still active is the process's recent answer when there is one
    (`Realtime.admissions`, forgotten by the `access` note of a deactivation)."""
    services = services_of(conn.app)
    rt = services.realtime
    db: Database = services.db

    async def is_active(principal: Principal) -> bool:
        def load() -> Awaitable[bool]:
            return user_is_active(db, principal.user_id, principal.workspace_id, role=principal.role.value)

        if rt is None:
            return await load()
        key = ("user", principal.workspace_id, principal.user_id, principal.role.value)
        return await rt.admissions.ask(key, guard.marks(user_id=principal.user_id), load)

    principal = await authenticate_request(conn, is_active=is_active)
    if principal.api_key_id is not None:
        require_scope(principal.scopes, "events:read")
    return principal


def _key_of(caller: Caller) -> int | None:
    key_id = getattr(caller, "api_key_id", None)
    return int(key_id) if key_id is not None else None


def access_check(db: Database) -> AccessCheck:
    async def check(caller: Caller) -> bool:
        session_id = getattr(caller, "session_id", None)
        expires_at = getattr(caller, "expires_at", None)
        if session_id is None and expires_at is not None and expires_at <= time.time():
            return False  # a token without a sign-in behind it lasts as long as the token (a key: its expiry)
        key_id = _key_of(caller)
        async with db.transaction() as session:
            if key_id is not None:
                return await keys.key_stands(session, key_id=key_id, workspace_id=caller.workspace_id)
            return await auth_service.access_stands(
                session, user_id=caller.user_id, workspace_id=caller.workspace_id, family_id=session_id
            )

    return check


def op_budget(limiter: Limiter, settings: Settings) -> OpBudget:
    bucket = Bucket("ws_ops", settings.ws_user_ops_burst, settings.ws_user_ops_per_s)

    async def spend(caller: Caller) -> bool:
        key_id = _key_of(caller)
        who = f"key:{key_id}" if key_id is not None else f"user:{caller.user_id}"
        decision = await limiter.hit([(f"wsops:{who}", bucket)])
        return decision is None or decision.allowed  # None: the limiter is down, fail open

    return spend

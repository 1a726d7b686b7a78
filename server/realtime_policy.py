"""What the server tells the real-time layer about a live connection (realtime/guard.py): whether
its caller's access still stands, and the caller's op budget across sockets and instances.
The real-time layer takes both as callables, so it never imports the server."""

from __future__ import annotations

import time

from realtime.types import AccessCheck, Caller, OpBudget
from server.auth import service as auth_service
from server.db import Database
from server.ratelimit import Bucket, Limiter
from server.settings import Settings


def access_check(db: Database) -> AccessCheck:
    async def check(caller: Caller) -> bool:
        session_id = getattr(caller, "session_id", None)
        expires_at = getattr(caller, "expires_at", None)
        if session_id is None and expires_at is not None and expires_at <= time.time():
            return False  # a token without a sign-in behind it lasts as long as the token
        async with db.transaction() as session:
            return await auth_service.access_stands(
                session, user_id=caller.user_id, workspace_id=caller.workspace_id, family_id=session_id
            )

    return check


def op_budget(limiter: Limiter, settings: Settings) -> OpBudget:
    bucket = Bucket("ws_ops", settings.ws_user_ops_burst, settings.ws_user_ops_per_s)

    async def spend(caller: Caller) -> bool:
        decision = await limiter.hit([(f"wsops:user:{caller.user_id}", bucket)])
        return decision is None or decision.allowed  # None: the limiter is down, fail open

    return spend

"""Sign-ins as sessions: a refresh-token family is one session (one sign-in on one device).

A family is live while its current token is unspent, unrevoked and unexpired. Its device and
address are those of its newest token (the last sign-in or refresh), its "last used" time is
when that token was issued: access tokens are checked without the database, so a refresh
(every `access_token_ttl_s` while the page is open) is the last use the server knows of.
Revoking a family ends its refreshes at once and its open sockets at their next access check
(server/realtime_policy.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from server.audit import service as audit
from server.auth.models import RefreshToken, User
from server.auth.service import find_user_by_email
from server.db import Database, utcnow


@dataclass(frozen=True, slots=True)
class Device:
    user_agent: str | None
    ip: str | None

    @classmethod
    def of(cls, conn: HTTPConnection) -> Device:
        return cls(conn.headers.get("user-agent"), audit.client_ip(conn))


@dataclass(frozen=True, slots=True)
class SessionView:
    id: str  # the family id (the `sid` its access tokens carry)
    user_agent: str | None
    ip: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime


def _live(now: dt.datetime) -> list[ColumnElement[bool]]:
    return [RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None), RefreshToken.expires_at > now]


async def list_sessions(session: AsyncSession, *, user_id: int) -> list[SessionView]:
    """The user's live sessions, most recently used first."""
    now = utcnow()
    started = (
        select(RefreshToken.family_id, func.min(RefreshToken.created_at).label("started"))
        .where(RefreshToken.user_id == user_id)
        .group_by(RefreshToken.family_id)
        .subquery()
    )
    rows = await session.execute(
        select(RefreshToken, started.c.started)
        .join(started, started.c.family_id == RefreshToken.family_id)
        .where(RefreshToken.user_id == user_id, *_live(now))
        .order_by(RefreshToken.created_at.desc())
    )
    return [
        SessionView(t.family_id, t.user_agent, t.ip, begun or t.created_at, t.created_at) for t, begun in rows
    ]


async def revoke_sessions(session: AsyncSession, *, user_id: int, family_id: str | None = None) -> int:
    """Revoke one of the user's sessions (`family_id`), or all of them. Returns how many."""
    q = select(RefreshToken.family_id).where(RefreshToken.user_id == user_id, *_live(utcnow()))
    if family_id is not None:
        q = q.where(RefreshToken.family_id == family_id)
    families = set((await session.execute(q)).scalars())
    if families:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id.in_(families), RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    return len(families)


def record_sign_in(session: AsyncSession, *, user: User, device: Device, method: str = "password") -> None:
    audit.record(
        session,
        workspace_id=user.workspace_id,
        actor=audit.Actor.user(user.id),
        action="auth.login",
        target=f"user:{user.id}",
        ip=device.ip,
        details={"method": method, "user_agent": (device.user_agent or "")[:200]},
    )


async def record_failed_sign_in(
    db: Database, *, email: str, device: Device, method: str = "password"
) -> None:
    """A failed sign-in for an address that is a user's (one of a workspace's people is being
    tried); an unknown address belongs to no workspace and is not recorded. The actor is
    `system`: whoever tried is not known to be that user."""
    async with db.transaction() as s:
        user = await find_user_by_email(s, email=email)
        if user is None:
            return
        audit.record(
            s,
            workspace_id=user.workspace_id,
            actor=audit.SYSTEM,
            action="auth.login_failed",
            target=f"user:{user.id}",
            ip=device.ip,
            details={"method": method, "reason": "password" if user.is_active else "deactivated"},
        )

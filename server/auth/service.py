from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.models import RefreshToken, Role, User, display_name
from server.auth.passwords import hash_password, verify_password
from server.db import Database, utcnow
from server.workspaces.models import Workspace


class AuthError(Exception):
    pass


class RefreshReused(AuthError):
    """A refresh token spent twice: its whole family (`family_id`) has just been revoked."""

    def __init__(self, family_id: str) -> None:
        super().__init__("refresh token reused")
        self.family_id = family_id


class DuplicateEmail(Exception):
    pass


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    token: str
    user: User
    family_id: str


def new_family_id() -> str:
    """The id of a new sign-in: its refresh tokens share it, and its access tokens carry it (`sid`)."""
    return secrets.token_hex(16)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def get_or_create_workspace(session: AsyncSession, *, name: str) -> Workspace:
    ws = (
        await session.execute(select(Workspace).where(func.lower(Workspace.name) == name.lower()))
    ).scalar_one_or_none()
    if ws is None:
        ws = Workspace(name=name)
        session.add(ws)
        await session.flush()
    return ws


async def create_user(
    session: AsyncSession, *, workspace_id: int, email: str, password: str, role: Role, name: str = ""
) -> User:
    user = User(
        workspace_id=workspace_id,
        email=email,
        name=name,
        password_hash=hash_password(password),
        role=role.value,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise DuplicateEmail(email) from None
    return user


def _live_user(user_id: int, workspace_id: int | None, role: str | None = None) -> Select[int]:
    """The user's id if it still exists (in that workspace, and with that role, when given) and is
    active."""
    q = select(User.id).where(User.id == user_id, User.is_active.is_(True))
    if workspace_id is not None:
        q = q.where(User.workspace_id == workspace_id)
    return q if role is None else q.where(User.role == role)


async def user_is_active(
    db: Database, user_id: int, workspace_id: int | None = None, *, role: str | None = None
) -> bool:
    """Whether the user still exists (in that workspace, when given) and is active, and still has
    the `role` a token was issued with (when given): one primary-key read, for callers holding a
    token issued before a deactivation, a deletion or a change of role."""
    async with db.engine.connect() as conn:
        return (await conn.execute(_live_user(user_id, workspace_id, role))).first() is not None


async def find_user_by_email(session: AsyncSession, *, email: str) -> User | None:
    q = select(User).where(func.lower(User.email) == email.strip().lower())
    return (await session.execute(q)).scalar_one_or_none()


async def check_credentials(session: AsyncSession, *, email: str, password: str) -> User:
    """The user, or AuthError: the same error for an unknown user and a wrong password."""
    user = await find_user_by_email(session, email=email)
    ok = verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise AuthError("invalid credentials")
    return user


async def issue_refresh(
    session: AsyncSession,
    *,
    user_id: int,
    ttl_s: int,
    family_id: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> str:
    """A new refresh token; `user_agent` and `ip` say where (the "your sessions" list)."""
    token = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=_digest(token),
            family_id=family_id or new_family_id(),
            user_id=user_id,
            expires_at=utcnow() + dt.timedelta(seconds=ttl_s),
            user_agent=user_agent[:300] if user_agent else None,
            ip=ip,
        )
    )
    await session.flush()
    return token


async def rotate_refresh(
    session: AsyncSession, *, token: str, ttl_s: int, user_agent: str | None = None, ip: str | None = None
) -> IssuedRefresh:
    """Spend a refresh token and issue its successor in the same family.

    A token spent before (a replay, maybe by a thief) revokes its whole family."""
    now = utcnow()
    row = await session.get(RefreshToken, _digest(token))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise AuthError("invalid refresh token")
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .returning(RefreshToken.id)
    )
    if spent.first() is None:
        await revoke_family(session, family_id=row.family_id)
        raise RefreshReused(row.family_id)
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise AuthError("invalid refresh token")
    new = await issue_refresh(
        session, user_id=user.id, ttl_s=ttl_s, family_id=row.family_id, user_agent=user_agent, ip=ip
    )
    return IssuedRefresh(token=new, user=user, family_id=row.family_id)


async def access_stands(
    session: AsyncSession, *, user_id: int, workspace_id: int, family_id: str | None
) -> bool:
    """For connections that outlive a request: the user still exists, is active and belongs to
    the workspace, and the sign-in `family_id` (when the token names one) is neither revoked
    (logout, a reused refresh token) nor expired."""
    q = _live_user(user_id, workspace_id)
    if family_id is not None:
        live = select(RefreshToken.id).where(
            RefreshToken.family_id == family_id,
            RefreshToken.user_id == user_id,
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > utcnow(),
        )
        q = q.where(live.exists())
    return (await session.execute(q)).first() is not None


async def revoke_family(session: AsyncSession, *, family_id: str) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_token(session: AsyncSession, *, token: str) -> str | None:
    """Sign out: revoke the family of a refresh token; returns it (None: no such token)."""
    row = await session.get(RefreshToken, _digest(token))
    if row is None:
        return None
    await revoke_family(session, family_id=row.family_id)
    return row.family_id


async def user_names(session: AsyncSession, workspace_id: int) -> dict[int, str]:
    """Every user of the workspace as shown to people: name, else email (`display_name`)."""
    rows = await session.execute(
        select(User.id, User.name, User.email).where(User.workspace_id == workspace_id)
    )
    return {r.id: display_name(r.name, r.email) for r in rows}


async def active_member(
    session: AsyncSession, *, user_id: int, workspace_id: int
) -> tuple[User, Workspace] | None:
    """The user and their workspace while the user is active and belongs to it, else None."""
    user = await session.get(User, user_id)
    workspace = await session.get(Workspace, workspace_id)
    if user is None or workspace is None or not user.is_active or user.workspace_id != workspace.id:
        return None
    return user, workspace

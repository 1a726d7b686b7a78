"""API keys: made, listed, revoked, and checked on every request that carries one.

The secret is `sb_live_` + 32 random bytes (base64url); only its SHA-256 is stored. A fast hash
is enough here, unlike for passwords: 256 random bits cannot be guessed, so the slow,
salted hash that protects low-entropy passwords against a stolen table buys nothing, and an
unsalted digest lets the check find the key with one indexed lookup (docs/decisions.md).

Every request with a key reads its row (no cache), so a revocation holds at once on every
instance; live connections ask again through `key_stands` (server/realtime_policy.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.apikeys.models import ApiKey
from server.apikeys.scopes import SCOPES
from server.db import Database, utcnow
from server.errors import NotFound

KEY_PREFIX = "sb_live_"
SHOWN_CHARS = len(KEY_PREFIX) + 6  # the prefix kept for lists: `sb_live_AbC123`
LAST_USED_EVERY = dt.timedelta(minutes=1)  # last use is written at most this often per key


class KeyNotFound(NotFound):
    what = "API key"


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """A key that stands, as the request needs it."""

    id: int
    workspace_id: int
    scopes: frozenset[str]
    expires_at: dt.datetime | None


def is_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _ordered_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = set(scopes)
    unknown = wanted - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope {sorted(unknown)[0]!r}")
    return [s for s in SCOPES if s in wanted]


async def create_key(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    scopes: Iterable[str],
    expires_at: dt.datetime | None,
    created_by: int | None,
) -> tuple[ApiKey, str]:
    """The new key and its secret (shown to the caller once, never stored)."""
    secret = new_secret()
    key = ApiKey(
        workspace_id=workspace_id,
        name=name,
        prefix=secret[:SHOWN_CHARS],
        secret_hash=digest(secret),
        scopes=_ordered_scopes(scopes),
        created_by=created_by,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, secret


async def list_keys(
    session: AsyncSession, *, workspace_id: int, after_id: int | None, limit: int
) -> list[ApiKey]:
    q = select(ApiKey).where(ApiKey.workspace_id == workspace_id)
    if after_id is not None:
        q = q.where(ApiKey.id > after_id)
    return list((await session.execute(q.order_by(ApiKey.id).limit(limit))).scalars())


async def revoke_key(session: AsyncSession, *, workspace_id: int, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.workspace_id != workspace_id:
        raise KeyNotFound()
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def _standing(now: dt.datetime) -> list[ColumnElement[bool]]:
    return [ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)]


async def check_key(db: Database, secret: str, *, ip: str | None) -> KeyAccess | None:
    """The key behind a secret if it stands (not revoked, not expired), else None. Notes its last
    use (time, IP) when the last note is older than a minute: one UPDATE per key per minute at
    most, across instances, since the UPDATE itself re-checks the age."""
    now = utcnow()
    async with db.transaction() as s:
        row = (
            await s.execute(
                select(
                    ApiKey.id, ApiKey.workspace_id, ApiKey.scopes, ApiKey.expires_at, ApiKey.last_used_at
                ).where(ApiKey.secret_hash == digest(secret), *_standing(now))
            )
        ).first()
        if row is None:
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
            stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_EVERY)
            await s.execute(
                update(ApiKey).where(ApiKey.id == row.id, stale).values(last_used_at=now, last_used_ip=ip)
            )
    return KeyAccess(row.id, row.workspace_id, frozenset(row.scopes or ()), row.expires_at)


async def key_id_of(db: Database, secret: str) -> int | None:
    """The id of the key behind a secret, standing or not (the rate limiter's bucket name)."""
    async with db.sessions() as s:
        return (await s.execute(select(ApiKey.id).where(ApiKey.secret_hash == digest(secret)))).scalar()


async def key_stands(session: AsyncSession, *, key_id: int, workspace_id: int) -> bool:
    """For connections that outlive a request: the key is neither revoked nor expired."""
    q = select(ApiKey.id).where(
        ApiKey.id == key_id, ApiKey.workspace_id == workspace_id, *_standing(utcnow())
    )
    return (await session.execute(q)).first() is not None

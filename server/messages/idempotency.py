"""`Idempotency-Key`: the first response to a key is stored with the change it made, in the same
transaction, and replayed for a retry of the same request; the same key on another request is an
error, never a second change."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.messages.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200


class KeyReused(Exception):
    """The key was first used with a different request body."""


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: dict[str, Any]


def check_key(key: str) -> str:
    """The key as given, or `ValueError` (1 to 200 visible ASCII characters)."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all(33 <= ord(ch) <= 126 for ch in key):
        raise ValueError(f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters")
    return key


def request_hash(payload: Any) -> str:
    """sha256 of the body as canonical JSON (keys sorted), so key order and spacing do not matter."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def lookup(
    session: AsyncSession, *, workspace_id: int, scope: str, key: str, digest: str
) -> Replay | None:
    """The stored response for this key, None if the key is new, `KeyReused` if the body differs."""
    rec = (
        await session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.workspace_id == workspace_id,
                IdempotencyRecord.scope == scope,
                IdempotencyRecord.key == key,
            )
        )
    ).scalar_one_or_none()
    if rec is None:
        return None
    if rec.request_hash != digest:
        raise KeyReused(key)
    return Replay(rec.status_code, rec.response)


async def remember(
    session: AsyncSession,
    *,
    workspace_id: int,
    scope: str,
    key: str,
    digest: str,
    status_code: int,
    response: dict[str, Any],
) -> None:
    """Store the response; a concurrent first use of the same key fails here (unique constraint)
    with `IntegrityError`, and the caller replays the winner's response instead."""
    session.add(
        IdempotencyRecord(
            workspace_id=workspace_id,
            key=key,
            scope=scope,
            request_hash=digest,
            status_code=status_code,
            response=response,
        )
    )
    await session.flush()

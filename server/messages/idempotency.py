"""`Idempotency-Key`: the first response to a key is stored with the change it made, in the same
transaction, and replayed for a retry of the same request; the same key on another request is an
error, never a second change."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from server.db import Database
from server.errors import Problem
from server.messages.models import IdempotencyRecord

T = TypeVar("T")

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


# --- the protocol as an endpoint runs it ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What `once` answered: the created value (None when the answer is a replay) and the body."""

    value: T | None
    body: dict[str, Any]
    status_code: int

    @property
    def replayed(self) -> bool:
        return self.value is None

    def response(self) -> Response:
        """The body as JSON with sorted keys: a replay comes back from a JSON column that may reorder
        them (PostgreSQL's jsonb does) and should be the same bytes as the first answer."""
        return Response(
            orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS),
            self.status_code,
            headers={"Idempotent-Replayed": "true"} if self.replayed else None,
            media_type="application/json",
        )


def key_from(headers: Mapping[str, str]) -> str | None:
    """The request's `Idempotency-Key`, None without one; a malformed key is a 422 problem."""
    key = headers.get(HEADER)
    if key is None:
        return None
    try:
        return check_key(key)
    except ValueError as exc:
        raise Problem(
            422, f"Idempotency-Key {exc}.", errors=[{"field": HEADER, "message": str(exc)}]
        ) from None


def _key_reused() -> Problem:
    return Problem(
        422,
        "This Idempotency-Key was already used with a different request body.",
        errors=[{"field": HEADER, "message": "already used with a different body"}],
    )


async def _replay(
    session: AsyncSession, *, workspace_id: int, scope: str, key: str, digest: str
) -> Outcome[Any] | None:
    try:
        found = await lookup(session, workspace_id=workspace_id, scope=scope, key=key, digest=digest)
    except KeyReused:
        raise _key_reused() from None
    return Outcome(None, found.body, found.status_code) if found is not None else None


async def once(
    db: Database,
    *,
    workspace_id: int,
    scope: str,
    key: str | None,
    digest: str,
    create: Callable[[AsyncSession], Awaitable[tuple[T, dict[str, Any]]]],
    status_code: int = 202,
) -> Outcome[T]:
    """Run `create` (which returns the value it made and the response body) at most once per key:
    in one transaction the key is looked up (a retry replays the stored answer, another body is a
    422), the change is made and the answer stored with it. A concurrent first use of the same key
    loses on the unique constraint and replays the winner's answer. Without a key, `create` runs."""
    try:
        async with db.transaction() as s:
            if key is not None:
                replay = await _replay(s, workspace_id=workspace_id, scope=scope, key=key, digest=digest)
                if replay is not None:
                    return replay
            value, body = await create(s)
            if key is not None:
                await remember(
                    s,
                    workspace_id=workspace_id,
                    scope=scope,
                    key=key,
                    digest=digest,
                    status_code=status_code,
                    response=body,
                )
    except IntegrityError:
        if key is not None:
            async with db.transaction() as s:
                replay = await _replay(s, workspace_id=workspace_id, scope=scope, key=key, digest=digest)
            if replay is not None:
                return replay
        raise
    return Outcome(value, body, status_code)

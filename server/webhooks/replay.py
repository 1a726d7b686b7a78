"""Refusing a replayed Mailgun signature (DESIGN §5, docs/decisions.md).

Mailgun signs the timestamp and a token, not the event data, so a captured signature would be
valid for five minutes with any `event-data`. Each token is remembered for its freshness window
with a digest of the data it came with, in the transaction that applies the webhook's events (and
so across instances): the same token with the same data is a provider's retry (answered as any
repeat, 200 and no change); with other data it is a forgery (401, nothing recorded)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from server.db import utcnow
from server.webhooks.models import WebhookToken
from server.webhooks.verify import SignedOnce

_TOKENS = cast(Table, WebhookToken.__table__)


def _insert(conn: AsyncConnection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(_TOKENS)


class ReplayedSignature(Exception):
    """A signature token seen before with other data: answer 401 and record nothing."""


async def claim(session: AsyncSession, claims: Sequence[tuple[int, SignedOnce | None]]) -> list[bool]:
    """For each (provider id, signature) of a batch: may its events be applied? Remembers the
    new tokens. False only for a token seen before (here or committed elsewhere) with other data."""
    ok = [True] * len(claims)
    first: dict[tuple[int, str], str] = {}  # within this batch
    rows: list[dict[str, object]] = []
    for i, (provider_id, signed) in enumerate(claims):
        if signed is None:
            continue
        key = (provider_id, signed.token_hash)
        if key in first:
            ok[i] = first[key] == signed.digest
            continue
        first[key] = signed.digest
        rows.append(
            {
                "provider_id": provider_id,
                "token_hash": signed.token_hash,
                "digest": signed.digest,
                "expires_at": dt.datetime.fromtimestamp(signed.expires_at, dt.UTC),
            }
        )
    if not rows:
        return ok
    conn = await session.connection()
    inserted = await conn.execute(
        _insert(conn)
        .on_conflict_do_nothing(index_elements=["provider_id", "token_hash"])
        .returning(_TOKENS.c.provider_id, _TOKENS.c.token_hash),
        rows,
    )
    seen_before = set(first) - {(p, t) for p, t in inserted.all()}
    if not seen_before:
        return ok
    stored = await conn.execute(
        select(_TOKENS.c.provider_id, _TOKENS.c.token_hash, _TOKENS.c.digest).where(
            tuple_(_TOKENS.c.provider_id, _TOKENS.c.token_hash).in_(list(seen_before))
        )
    )
    earlier = {(p, t): d for p, t, d in stored.all()}
    for i, (provider_id, signed) in enumerate(claims):
        if signed is not None and (key := (provider_id, signed.token_hash)) in earlier:
            ok[i] = ok[i] and earlier[key] == signed.digest
    return ok


async def prune(session: AsyncSession, *, now: dt.datetime | None = None) -> int:
    """Forget tokens whose signatures are too old to be accepted anyway."""
    conn = await session.connection()
    result = await conn.execute(delete(_TOKENS).where(_TOKENS.c.expires_at < (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)

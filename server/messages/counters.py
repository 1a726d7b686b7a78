"""The board's counters, maintained: messages per (workspace, hour created, status, channel).

Definition: `message_count` holds, for each workspace, hour bucket (the UTC hour a message was
*created* in), status and channel, how many of those messages are in that status *now*. Every path
that creates a message or changes its status writes, in its own transaction, one set-based INSERT
of deltas (`record`): +1 for a new message, and -1 old status / +1 new status for a move, computed
from the rows it changed. So `sum(n)` over a bucket equals `COUNT(*)` over its messages, exactly,
whatever the order of events (the moves themselves obey `server.messages.status`).

Why deltas and not an `INSERT … ON CONFLICT DO UPDATE` on `message_count` in each writer: every
writer of a workspace would lock the same few hot rows (this hour, each status and channel) until commit,
before the outbox's workspace row lock; the dispatcher's claim transaction then takes counter rows
again after its first emit, and a webhook moving `sending → sent` waits the other way round: a
deadlock. Appending delta rows takes no shared lock. `fold` (run by the board feed, one per
deployment, every second) moves them into `message_count` in one transaction; `window` adds both
tables in one statement (one snapshot), so a reader never sees a delta twice or not at all.

The board's "24h" is the current hour and the 24 whole hours before it (`WINDOW_HOURS`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text, union_all
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import dialect_of, utcnow
from server.messages.models import MessageCount, MessageCountDelta, MessageStatus

CHANNELS = ("email", "sms", "whatsapp", "chat")
STATUSES = tuple(s.value for s in MessageStatus)
WINDOW_HOURS = 24  # whole hours before the current one: the board's "24h"

_COUNT = cast(Table, MessageCount.__table__)
_DELTA = cast(Table, MessageCountDelta.__table__)

Key = tuple[int, dt.datetime, str, str]  # (workspace id, bucket, status, channel)
Move = tuple[int, dt.datetime, str, str, str]  # (workspace id, created_at, channel, old, new status)


def bucket_of(at: dt.datetime) -> dt.datetime:
    """The start of the UTC hour `at` falls in."""
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class Deltas:
    """Changes to the counters, accumulated in memory and written by `record`."""

    counts: Counter[Key] = field(default_factory=Counter)

    def created(self, workspace_id: int, created_at: dt.datetime, channel: str, status: str) -> None:
        self.counts[(workspace_id, bucket_of(created_at), status, channel)] += 1

    def moved(self, workspace_id: int, created_at: dt.datetime, channel: str, old: str, new: str) -> None:
        if old == new:
            return
        bucket = bucket_of(created_at)
        self.counts[(workspace_id, bucket, old, channel)] -= 1
        self.counts[(workspace_id, bucket, new, channel)] += 1

    def rows(self) -> list[tuple[Key, int]]:
        return sorted((k, n) for k, n in self.counts.items() if n)


_RECORD_PG = text(
    """
    INSERT INTO message_count_delta (workspace_id, bucket, status, channel, n)
    SELECT * FROM unnest(
        CAST(:workspace_ids AS bigint[]), CAST(:buckets AS timestamptz[]),
        CAST(:statuses AS varchar[]), CAST(:channels AS varchar[]), CAST(:ns AS bigint[])
    )
    """
)


async def record(session: AsyncSession, deltas: Deltas) -> None:
    """Write the deltas in this transaction: one statement, no lock on any shared row."""
    rows = deltas.rows()
    if not rows:
        return
    if dialect_of(session) == "postgresql":
        await session.execute(
            _RECORD_PG,
            {
                "workspace_ids": [k[0] for k, _ in rows],
                "buckets": [k[1] for k, _ in rows],
                "statuses": [k[2] for k, _ in rows],
                "channels": [k[3] for k, _ in rows],
                "ns": [n for _, n in rows],
            },
        )
        return
    await session.execute(
        insert(_DELTA),
        [{"workspace_id": ws, "bucket": b, "status": s, "channel": c, "n": n} for (ws, b, s, c), n in rows],
    )


async def record_moves(session: AsyncSession, moves: Iterable[Move]) -> None:
    """`record` for (workspace id, created_at, channel, old status, new status) moves."""
    deltas = Deltas()
    for workspace_id, created_at, channel, old, new in moves:
        deltas.moved(workspace_id, created_at, channel, old, new)
    await record(session, deltas)


def window_start(now: dt.datetime | None = None, hours: int = WINDOW_HOURS) -> dt.datetime:
    return bucket_of(now or utcnow()) - dt.timedelta(hours=hours)


async def window(session: AsyncSession, *, workspace_id: int, hours: int = WINDOW_HOURS) -> dict[str, Any]:
    """The workspace's messages created in the current hour and the `hours` before it, by status
    and by channel: one small statement over the counters, whatever the size of `message`."""
    since = window_start(hours=hours)
    parts = [
        select(t.c.status, t.c.channel, t.c.n).where(t.c.workspace_id == workspace_id, t.c.bucket >= since)
        for t in (_COUNT, _DELTA)
    ]
    both = union_all(*parts).subquery()
    rows = await session.execute(
        select(both.c.status, both.c.channel, func.sum(both.c.n)).group_by(both.c.status, both.c.channel)
    )
    by_status = dict.fromkeys(STATUSES, 0)
    by_channel = dict.fromkeys(CHANNELS, 0)
    total = 0
    for status, channel, n in rows:
        n = int(n)
        by_status[status] = by_status.get(status, 0) + n
        by_channel[channel] = by_channel.get(channel, 0) + n
        total += n
    return {"by_status": by_status, "by_channel": by_channel, "total": total}


async def totals(session: AsyncSession) -> dict[Key, int]:
    """Every non-zero counter, all buckets (for checks against `COUNT(*)`)."""
    parts = [select(t.c.workspace_id, t.c.bucket, t.c.status, t.c.channel, t.c.n) for t in (_COUNT, _DELTA)]
    both = union_all(*parts).subquery()
    keys = (both.c.workspace_id, both.c.bucket, both.c.status, both.c.channel)
    rows = await session.execute(select(*keys, func.sum(both.c.n)).group_by(*keys))
    out: dict[Key, int] = {}
    for ws, bucket, status, channel, n in rows:
        if n:
            out[(ws, bucket_of(bucket), status, channel)] = int(n)
    return out


_FOLD_PG = text(
    """
    WITH gone AS (
        DELETE FROM message_count_delta RETURNING workspace_id, bucket, status, channel, n
    ), sums AS (
        SELECT workspace_id, bucket, status, channel, sum(n) AS n FROM gone
        GROUP BY workspace_id, bucket, status, channel HAVING sum(n) <> 0
    )
    INSERT INTO message_count (workspace_id, bucket, status, channel, n)
    SELECT workspace_id, bucket, status, channel, n FROM sums
    ORDER BY workspace_id, bucket, status, channel
    ON CONFLICT (workspace_id, bucket, status, channel) DO UPDATE SET n = message_count.n + excluded.n
    RETURNING workspace_id
    """
)


async def fold(session: AsyncSession) -> set[int]:
    """Move every committed delta into `message_count`; returns the workspaces whose counts changed.
    Safe beside writers (they only insert) and beside another fold (a deleted row is folded once)."""
    if dialect_of(session) == "postgresql":
        return {int(ws) for (ws,) in await session.execute(_FOLD_PG)}
    gone = await session.execute(
        _DELTA.delete().returning(
            _DELTA.c.workspace_id, _DELTA.c.bucket, _DELTA.c.status, _DELTA.c.channel, _DELTA.c.n
        )
    )
    sums: Counter[Key] = Counter()
    for ws, bucket, status, channel, n in gone:
        sums[(ws, bucket, status, channel)] += n
    rows = [(k, n) for k, n in sorted(sums.items()) if n]
    if not rows:
        return set()
    stmt = sqlite_insert(_COUNT)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "bucket", "status", "channel"],
            set_={"n": _COUNT.c.n + stmt.excluded.n},
        ),
        [{"workspace_id": ws, "bucket": b, "status": s, "channel": c, "n": n} for (ws, b, s, c), n in rows],
    )
    return {k[0] for k, _ in rows}

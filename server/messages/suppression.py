"""The suppression check before every send: a Bloom filter per workspace in front of the table.

A Bloom miss is final; a hit is only a maybe, and the `suppression` table decides. Before each check
the rows added since the last one are read (a range on the primary key: nothing when nothing changed),
and the filters are rebuilt from scratch every `rebuild_s`, which also forgets addresses taken off
the list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from rbloom import Bloom
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from server.messages.models import Suppression

FALSE_POSITIVE_RATE = 0.001
MIN_CAPACITY = 10_000
# Ids come from a sequence, and two transactions can commit out of id order: every `slack_s` re-read
# this many ids below the highest seen, so a row that committed late is not missed until the rebuild.
ID_SLACK = 1000


def normalize(address: str) -> str:
    return address.strip().lower()


class _Filter:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bloom = Bloom(capacity, FALSE_POSITIVE_RATE)
        self.count = 0

    def add(self, address: str) -> None:
        self.bloom.add(address)
        self.count += 1


class SuppressionFilter:
    def __init__(
        self, *, slack_s: float = 5.0, rebuild_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slack_s = slack_s
        self.rebuild_s = rebuild_s
        self.clock = clock
        self._filters: dict[int, _Filter] = {}
        self._last_id = 0
        self._built_at: float | None = None
        self._refreshed_at = 0.0
        self.db_checks = 0  # Bloom hits that went to the database (for metrics)

    async def _rebuild(self, session: AsyncSession) -> None:
        counts = dict(
            (
                await session.execute(
                    select(Suppression.workspace_id, func.count()).group_by(Suppression.workspace_id)
                )
            ).all()
        )
        self._filters = {ws: _Filter(max(MIN_CAPACITY, 2 * n)) for ws, n in counts.items()}
        self._last_id = 0
        await self._read_new(session)
        self._built_at = self._refreshed_at = self.clock()

    async def _read_new(self, session: AsyncSession, slack: int = 0) -> None:
        rows = await session.execute(
            select(Suppression.id, Suppression.workspace_id, Suppression.address)
            .where(Suppression.id > self._last_id - slack)
            .order_by(Suppression.id)
        )
        grow = False
        for row_id, workspace_id, address in rows:
            f = self._filters.get(workspace_id)
            if f is None:
                f = self._filters[workspace_id] = _Filter(MIN_CAPACITY)
            f.add(normalize(address))
            grow = grow or f.count > f.capacity
            self._last_id = max(self._last_id, row_id)
        if grow:  # past its capacity a filter's false-positive rate climbs: size it again
            self._built_at = None

    async def refresh(self, session: AsyncSession) -> None:
        now = self.clock()
        if self._built_at is None or now - self._built_at >= self.rebuild_s:
            await self._rebuild(session)
        elif now - self._refreshed_at >= self.slack_s:
            await self._read_new(session, ID_SLACK)
            self._refreshed_at = now
        else:
            await self._read_new(session)

    def maybe(self, workspace_id: int, address: str) -> bool:
        f = self._filters.get(workspace_id)
        return f is not None and normalize(address) in f.bloom

    async def suppressed(
        self, session: AsyncSession, items: Iterable[tuple[int, str]]
    ) -> set[tuple[int, str]]:
        """Which of these (workspace, address) pairs are on the suppression list (as given, not normalized)."""
        await self.refresh(session)
        hits = {(ws, a) for ws, a in items if a and self.maybe(ws, a)}
        if not hits:
            return set()
        self.db_checks += len(hits)
        keys = {(ws, normalize(a)) for ws, a in hits}
        found = set(
            (
                await session.execute(
                    # Stored lower-cased (emails) or E.164 (phones): the unique index serves this.
                    select(Suppression.workspace_id, Suppression.address).where(
                        tuple_(Suppression.workspace_id, Suppression.address).in_(list(keys))
                    )
                )
            ).all()
        )
        return {(ws, a) for ws, a in hits if (ws, normalize(a)) in found}

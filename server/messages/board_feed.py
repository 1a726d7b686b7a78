"""The board feed: one producer of `board.counters` events for the whole deployment.

Every `interval_s` (one second) it folds the counters' deltas (`server.messages.counters.fold`)
and, for each workspace whose counts changed, emits one `board.counters` event through the
outbox in the same transaction (DESIGN §11: `{"window": "24h", "by_status", "by_channel"}` on
topic `board`). So a workspace gets at most one such event a second, none while nothing changes,
and the database work is the same for one watching agent or a thousand: boards read the event,
not the table.

It runs in the web process whose relay holds the lease (`leading`): one per deployment, not one
per web instance. On PostgreSQL an advisory lock also keeps two folds from overlapping while the
lease changes hands. A worker-only process writes deltas and never folds; readers add the
unfolded deltas, so the figures stay exact if no web process runs for a while."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from realtime.lifecycle import Supervisor
from server.db import Database, dialect_of
from server.events.service import emit
from server.messages import counters

log = logging.getLogger("switchboard.board")

INTERVAL_S = 1.0  # DESIGN §11: at most one `board.counters` event a second per workspace
LOCK_KEY = 0x5B_0A_2D_C0  # advisory lock id of the fold
WINDOW = "24h"  # the current hour and the 24 whole hours before it (`counters.WINDOW_HOURS`)


def payload(window: dict[str, Any]) -> dict[str, Any]:
    return {"window": WINDOW, "by_status": window["by_status"], "by_channel": window["by_channel"]}


class BoardFeed:
    def __init__(
        self,
        db: Database,
        *,
        leading: Callable[[], bool],
        on_change: Callable[[int], None] | None = None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.db = db
        self.leading = leading  # True in the one process that should produce (the relay's lease)
        self.on_change = on_change  # called with each workspace id after commit (realtime's poke)
        self.interval_s = interval_s
        self.emitted = 0
        self.supervisor = Supervisor("board-feed")

    async def start(self) -> None:
        self.supervisor.spawn("board-feed", self._loop)

    async def stop(self) -> None:
        await self.supervisor.stop()

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    async def tick(self) -> set[int]:
        """One round: fold and emit; returns the workspaces that got an event."""
        if not self.leading():
            return set()
        async with self.db.transaction() as s:
            if dialect_of(s) == "postgresql":
                got = (
                    await s.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                ).scalar()
                if not got:
                    return set()
            changed = await counters.fold(s)
            for workspace_id in sorted(changed):  # the outbox's row locks, in a fixed order
                window = await counters.window(s, workspace_id=workspace_id)
                await emit(s, workspace_id, "board.counters", payload(window))
        self.emitted += len(changed)
        if self.on_change is not None:
            for workspace_id in changed:
                self.on_change(workspace_id)
        return changed

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                # A database blip must not stop the feed; the deltas wait for the next round.
                log.exception("folding the board counters failed")
            await asyncio.sleep(self.interval_s)

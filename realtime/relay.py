"""The outbox relay: publishes committed event-log rows to the broadcast backend.

At least once and in id order, per workspace: the cursor of a workspace advances only after
the backend accepted the batch (with Redis, the cursors are written in the same MULTI as the
PUBLISHes). Wake-ups come from PostgreSQL `LISTEN switchboard_events` (emit NOTIFYs at commit),
from `poke()` after an in-process commit, and from a slow poll. Several web processes may run
a relay; a Redis lease lets one publish at a time, and hubs drop ids they have seen anyway.
What the relay alone cannot promise (a batch published while a subscriber was reconnecting,
events committed while no relay held the lease) the hubs repair from the event log."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from realtime import log as eventlog
from realtime.backend import Backend, Message
from realtime.wire import encode_batch
from server.db import Database, utcnow
from server.events.service import NOTIFY_CHANNEL

log = logging.getLogger("switchboard.realtime")

POLL_S = 1.0  # fallback when no notification arrives (lost NOTIFY, SQLite in another process)
LEASE_TTL_S = 5.0  # a dead leader's lease expires this fast; renewed every TTL/3
BATCH = 1000  # events per workspace per round
RETRY_MAX_S = 5.0
# A new leader without a recorded cursor republishes this much recent history: a duplicate is
# dropped by every hub, whereas an event nobody published waits for a hub's sweep.
TAKEOVER_REPLAY_S = 10.0


class Relay:
    def __init__(self, db: Database, backend: Backend, *, poll_s: float = POLL_S, batch: int = BATCH) -> None:
        self.db = db
        self.backend = backend
        self.poll_s = poll_s
        self.batch = batch
        self.token = uuid.uuid4().hex
        self.cursors: dict[int, int] | None = None  # None until we hold the lease
        self.published = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_until = 0.0

    def poke(self, workspace_id: int | None = None) -> None:
        """Something committed: publish soon. Safe to call from any code on the loop."""
        self._wake.set()

    async def start(self) -> None:
        sa_event.listen(Session, "after_commit", self._after_commit)
        try:
            await self._leader()
        except Exception as exc:
            log.warning("relay start: %s; will retry", exc)
        self._tasks = [asyncio.create_task(self._run(), name="relay")]
        if self.db.dialect == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_pg(), name="relay-listen"))

    async def stop(self) -> None:
        sa_event.remove(Session, "after_commit", self._after_commit)
        self._stop.set()
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass

    def _after_commit(self, session: Session) -> None:
        if session.bind is self.db.engine.sync_engine:
            self._wake.set()

    async def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if await self._leader():
                    while await self.publish_pending():
                        pass
                delay = 0.1
            except Exception as exc:
                # Nothing advanced: the same rows are read and published again next round.
                log.warning("relay round failed (%s: %s); retrying", exc.__class__.__name__, exc)
                self.cursors = None if not await self._safe_lease() else self.cursors
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()

    async def _safe_lease(self) -> bool:
        try:
            return await self.backend.hold_lease(self.token, LEASE_TTL_S)
        except Exception:
            return False

    async def _leader(self) -> bool:
        loop = asyncio.get_running_loop()
        if self.cursors is not None and loop.time() < self._lease_until:
            return True
        if not await self.backend.hold_lease(self.token, LEASE_TTL_S):
            self.cursors = None
            return False
        self._lease_until = loop.time() + LEASE_TTL_S / 3
        if self.cursors is None:
            await self._take_over()
        return True

    async def _take_over(self) -> None:
        """Start from the cursors the last leader recorded; a workspace it never published
        starts from its head now (hubs read older history from the log themselves)."""
        stored = await self.backend.load_cursors()
        async with self.db.sessions() as session:
            now = await eventlog.heads(session)
            recent = await eventlog.first_since(session, utcnow() - dt.timedelta(seconds=TAKEOVER_REPLAY_S))
        self.cursors = {w: stored.get(w, recent[w] - 1 if w in recent else head) for w, head in now.items()}

    async def publish_pending(self) -> bool:
        """One round; True when a workspace had more than a batch waiting."""
        assert self.cursors is not None
        cursors = self.cursors
        batches: list[Message] = []
        advanced: dict[int, int] = {}
        more = False
        async with self.db.sessions() as session:
            for workspace_id, head in (await eventlog.heads(session)).items():
                after = cursors.get(workspace_id, 0)
                if head <= after:
                    continue
                events = await eventlog.read_events(session, workspace_id, after, upto=head, limit=self.batch)
                if not events:
                    continue
                batches.append((workspace_id, encode_batch(events)))
                advanced[workspace_id] = events[-1].id
                more = more or events[-1].id < head
        if batches:
            await self.backend.publish(batches, advanced)
            self.published += sum(last - cursors.get(w, 0) for w, last in advanced.items())
            cursors.update(advanced)
        return more

    async def _listen_pg(self) -> None:
        import asyncpg

        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.2
        while not self._stop.is_set():
            conn: Any = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn)
                conn.add_termination_listener(lambda *_, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
                self._wake.set()  # catch up with what committed while we were not listening
                delay = 0.2
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("relay LISTEN lost (%s); reconnecting", exc.__class__.__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

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
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from realtime.backend import Backend, Message
from realtime.lifecycle import Supervisor
from realtime.pglisten import pg_listen
from realtime.types import Database, EventLog, Readable, encode_batch

log = logging.getLogger("switchboard.realtime")

POLL_S = 1.0  # fallback when no notification arrives (lost NOTIFY, SQLite in another process)
LEASE_TTL_S = 5.0  # a dead leader's lease expires this fast; renewed every TTL/3
BATCH = 1000  # events per workspace per round
RETRY_MAX_S = 5.0
STOP_GRACE_S = 2.0
# A new leader without a recorded cursor republishes this much recent history: a duplicate is
# dropped by every hub, whereas an event nobody published waits for a hub's sweep.
TAKEOVER_REPLAY_S = 10.0


class Relay:
    def __init__(
        self,
        db: Database,
        backend: Backend,
        *,
        log: EventLog,
        reader: Readable | None = None,
        poll_s: float = POLL_S,
        batch: int = BATCH,
    ) -> None:
        self.db = db  # where the app commits (for the commit hook and LISTEN)
        self.log = log
        self.reader: Readable = reader or db  # where the relay reads
        self.backend = backend
        self.poll_s = poll_s
        self.batch = batch
        self.token = uuid.uuid4().hex
        self.cursors: dict[int, int] | None = None  # None until we hold the lease
        self.published = 0
        self._wake = asyncio.Event()
        self._dirty: set[int] = set()
        self._hooked = False
        self._conn: AsyncConnection | None = None
        self._scan = True  # read every workspace's head (after a poll timeout or an unknown commit)
        self._stop = asyncio.Event()
        self.supervisor = Supervisor("relay")
        self._lease_until = 0.0

    @property
    def leading(self) -> bool:
        """Whether this relay holds the lease (one per deployment): jobs that must run once, not
        once per web process, run where this is true (e.g. the board feed)."""
        return self.cursors is not None

    def poke(self, workspace_id: int | None = None) -> None:
        """Something committed (in `workspace_id`, or anywhere): publish soon."""
        if workspace_id is None:
            self._scan = True
        else:
            self._dirty.add(workspace_id)
        self._wake.set()

    async def start(self) -> None:
        # PostgreSQL tells us which workspace committed (NOTIFY); SQLite only that a commit happened.
        self._hooked = self.db.dialect != "postgresql"
        if self._hooked:
            sa_event.listen(Session, "after_commit", self._after_commit)
        try:
            await self._leader()
        except Exception as exc:
            log.warning("relay start: %s; will retry", exc)
        self._stop.clear()
        self.supervisor.spawn("relay", self._run)
        if self.db.dialect == "postgresql":
            self.supervisor.spawn(
                "relay-listen",
                lambda: pg_listen(self.db.url, self.log.notify_channel, self._notified, poll_s=self.poll_s),
            )

    async def stop(self) -> None:
        if self._hooked:
            sa_event.remove(Session, "after_commit", self._after_commit)
        self._stop.set()
        self._wake.set()
        # Let a round in flight finish (a database call cut off by cancellation can outlive
        # the event loop in the driver's thread); cancel only what is still waiting after that.
        run = self.supervisor.tasks.get("relay")
        if run is not None:
            await asyncio.wait([run], timeout=STOP_GRACE_S)
        await self.supervisor.stop()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _after_commit(self, session: Session) -> None:
        if session.bind is self.db.engine.sync_engine:
            self.poke()

    async def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                self._scan = True
            if self._stop.is_set():
                return
            self._wake.clear()
            scan, self._scan = self._scan, False
            dirty, self._dirty = self._dirty, set()
            try:
                if await self._leader():
                    while await self.publish_pending(None if scan else dirty):
                        scan = True
                delay = 0.1
            except Exception as exc:
                # Nothing advanced: the same rows are read and published again next round.
                log.warning("relay round failed (%s: %s); retrying", exc.__class__.__name__, exc)
                self._scan = True
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
        if loop.time() < self._lease_until:
            return self.cursors is not None  # leader until renewal, or standby until the next try
        if not await self.backend.hold_lease(self.token, LEASE_TTL_S):
            self.cursors = None
            self._lease_until = loop.time() + LEASE_TTL_S / 3
            return False
        self._lease_until = loop.time() + LEASE_TTL_S / 3
        if self.cursors is None:
            await self._take_over()
        return True

    async def _take_over(self) -> None:
        """Start from the cursors the last leader recorded; a workspace it never published
        starts from its head now (hubs read older history from the log themselves)."""
        stored = await self.backend.load_cursors()
        async with self.reader.sessions() as session:
            now = await self.log.heads(session)
            recent = await self.log.first_since(
                session, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=TAKEOVER_REPLAY_S)
            )
        self.cursors = {w: stored.get(w, recent[w] - 1 if w in recent else head) for w, head in now.items()}

    async def publish_pending(self, workspaces: set[int] | None = None) -> bool:
        """One round over `workspaces` (None: every workspace whose head moved);
        True when one had more than a batch waiting."""
        assert self.cursors is not None
        cursors = self.cursors
        batches: list[Message] = []
        advanced: dict[int, int] = {}
        more = False
        async with self._reader() as session:
            if workspaces is None:
                heads = await self.log.heads(session)
                todo = [w for w, head in heads.items() if head > cursors.get(w, 0)]
            else:
                todo = sorted(workspaces)
            for workspace_id in todo:
                events = await self.log.read_events(
                    session, workspace_id, cursors.get(workspace_id, 0), limit=self.batch
                )
                if not events:
                    continue
                batches.append((workspace_id, encode_batch(events)))
                advanced[workspace_id] = events[-1].id
                more = more or len(events) == self.batch
        if batches:
            await self.backend.publish(batches, advanced)
            self.published += sum(last - cursors.get(w, 0) for w, last in advanced.items())
            cursors.update(advanced)
        return more

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[Any]:
        """On PostgreSQL one autocommit connection held across rounds (no checkout, ping or
        BEGIN per round); on SQLite a session per round, so no snapshot outlives it."""
        if self.reader.dialect != "postgresql":
            async with self.reader.sessions() as session:
                yield session
            return
        if self._conn is None or self._conn.closed:
            self._conn = await self.reader.engine.connect()
            await self._conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield self._conn
        except BaseException:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    def _notified(self, payload: str | None) -> None:
        """A NOTIFY (payload: the workspace id), or None: look at every workspace."""
        try:
            self.poke(int(payload) if payload else None)
        except ValueError:
            self.poke()

"""Background jobs whose state is a database row held by a lease (contact imports, bulk actions).

A job row has `id`, `workspace_id`, `status` (running|done|failed), `owner` (the instance running
it), `lease_until` and `finished_at`. The instance running a job renews its lease from one sweep
loop (every lease/3, under the component's `Supervisor`) and fences every write of the job with
`owner = me` (`fence`): an instance that stalled past its lease and lost the job to another writes
nothing more (`LeaseLost`). The same sweep hands each running job whose lease ran out to `adopt`
(the job kind decides: resume it here, or end it failed) and forgets finished jobs after a TTL.

`stop()` lets each running job finish the chunk it is committing (cancelling a task inside its
transaction could leave the connection, and on SQLite the write lock, held until it is collected),
then hands the running jobs back (lease cleared) so the next start, here or elsewhere, resumes them
at once. A job's task checks `stopping` between chunks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from realtime.lifecycle import Supervisor
from server.db import Database, utcnow

log = logging.getLogger("switchboard.jobs")


class LeaseLost(Exception):
    """Another instance took this job over (this one stalled past its lease): stop, write nothing."""


class LeasedJobs:
    """The jobs of one kind (`model`, a table with the columns above) that this instance runs.
    Subclasses implement `adopt` and may extend `forget`."""

    def __init__(
        self, db: Database, model: Any, *, name: str, sweep_name: str, lease_s: float, ttl_s: float
    ) -> None:
        self.db = db
        self.model = model
        self.lease_s = lease_s
        self.finished_ttl_s = ttl_s
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.stopping = False  # the running jobs end after the chunk they are committing
        self.supervisor = Supervisor(name)
        self._sweep_name = sweep_name
        self._tasks: dict[int, asyncio.Task[None]] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.stopping = False
        self.supervisor.spawn(self._sweep_name, self._sweep_forever)

    async def stop(self, grace_s: float = 10.0) -> None:
        await self.supervisor.stop()
        self.stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=grace_s)
            for t in late:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        M = self.model
        try:
            async with self.db.transaction() as s:
                await s.execute(
                    update(M)
                    .where(M.owner == self.owner, M.status == "running")
                    .values(owner=None, lease_until=None)
                )
        except Exception:
            log.exception("handing back the running %s jobs failed (their leases will run out)", M.__name__)

    async def wait(self) -> None:
        """Until every job this instance runs has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    # --- jobs -----------------------------------------------------------------------------------

    def launch(self, job_id: int, run: Coroutine[Any, Any, None], name: str) -> None:
        """Run a job's task here (it catches its own errors and records them on the job)."""
        task = asyncio.create_task(run, name=name)
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    def lease(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.lease_s)

    async def running(self, s: AsyncSession, workspace_id: int, now: dt.datetime) -> int:
        """How many of the workspace's jobs run under a live lease (call under the workspace lock)."""
        M = self.model
        query = select(func.count()).where(
            M.workspace_id == workspace_id, M.status == "running", M.lease_until > now
        )
        return int((await s.execute(query)).scalar_one())

    async def fence(self, s: AsyncSession, job_id: int, values: dict[str, Any]) -> None:
        """Write a job's row only while this instance owns it; `LeaseLost` otherwise (the caller's
        transaction then rolls back with everything it wrote)."""
        M = self.model
        result = await s.execute(update(M).where(M.id == job_id, M.owner == self.owner).values(**values))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(job_id)

    async def claim(self, job_id: int, now: dt.datetime, lease: dt.datetime) -> bool:
        """Take over a running job whose lease ran out (one instance wins)."""
        M = self.model
        async with self.db.transaction() as s:
            result = await s.execute(
                update(M)
                .where(
                    M.id == job_id,
                    M.status == "running",
                    or_(M.lease_until.is_(None), M.lease_until < now),
                )
                .values(owner=self.owner, lease_until=lease)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    # --- the sweep: leases, orphans, expiry -----------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(max(self.lease_s / 3, 0.05))

    async def sweep(self) -> None:
        """Renew this instance's leases, hand jobs whose lease ran out to `adopt`, and forget
        finished jobs older than the TTL."""
        M = self.model
        now = utcnow()
        lease = self.lease(now)
        async with self.db.transaction() as s:
            await s.execute(
                update(M).where(M.owner == self.owner, M.status == "running").values(lease_until=lease)
            )
            orphans = list(
                (
                    await s.execute(
                        select(M).where(
                            M.status == "running", or_(M.lease_until.is_(None), M.lease_until < now)
                        )
                    )
                ).scalars()
            )
        for job in orphans:
            await self.adopt(job, now, lease)
        await self.expire()

    async def adopt(self, job: Any, now: dt.datetime, lease: dt.datetime) -> None:
        """A running job nobody holds: `claim` it, then resume it here or end it failed."""
        raise NotImplementedError

    async def expire(self) -> None:
        """Forget finished jobs older than `finished_ttl_s`."""
        M = self.model
        cutoff = utcnow() - dt.timedelta(seconds=self.finished_ttl_s)
        async with self.db.transaction() as s:
            old = and_(M.status != "running", M.finished_at <= cutoff)
            await self.forget(s, old)
            await s.execute(delete(M).where(old))

    async def forget(self, s: AsyncSession, old: ColumnElement[bool]) -> None:
        """Before the `old` job rows are deleted: remove what belongs to them."""

"""The report job: a component of the worker (and of `serve` with the embedded dispatcher).

Every `interval_s` it recomputes yesterday and today, so today's row moves live (each change is
a `report.updated` event) and yesterday's settles after midnight; `run_once` is the on-demand
entry point (also behind `POST /api/v1/reports/recompute`). Several workers may run it at
once: the recompute is an idempotent upsert.

It is also the periodic job that applies the admin audit log's retention (`audit_retention_days`),
once per `AUDIT_PRUNE_EVERY_S`: a DELETE by `at` that any number of workers may run."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import text

from realtime.lifecycle import Supervisor
from server.audit import service as audit_service
from server.db import Database, dialect_of, utcnow
from server.reports import service

log = logging.getLogger("switchboard.reports")

INTERVAL_S = 30.0
AUDIT_PRUNE_EVERY_S = 3600.0  # retention is counted in days: hourly keeps the log within an hour of it
LOCK_KEY = 0x5B_0D_A1_1E  # advisory lock id of the report recompute  # how stale today's figures may get; each tick is two small GROUP BY queries


async def run_once(
    db: Database,
    *,
    first: dt.date | None = None,
    last: dt.date | None = None,
    workspace_id: int | None = None,
    wait: bool = True,
) -> dict[int, list[dict[str, Any]]]:
    """Recompute `first`..`last` (default: yesterday and today, UTC) in one transaction.

    On PostgreSQL one recompute runs at a time across all workers (an advisory lock), so two
    workers never emit the same `report.updated` twice; with `wait=False` a busy lock skips."""
    today = utcnow().date()
    last = last or today
    first = first or min(last, today - dt.timedelta(days=1))
    async with db.transaction() as session:
        if dialect_of(session) == "postgresql":
            fn = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            got = (await session.execute(text(f"SELECT {fn}(:k)"), {"k": LOCK_KEY})).scalar()
            if got is False:
                return {}
        return await service.recompute(session, first=first, last=last, workspace_id=workspace_id)


class ReportJob:
    def __init__(
        self,
        db: Database,
        *,
        interval_s: float = INTERVAL_S,
        on_change: Any = None,
        audit_retention_days: float | None = None,
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self.on_change = on_change  # called with the workspace ids after a commit (e.g. realtime's poke)
        self.audit_retention_days = audit_retention_days  # None: the audit log is not pruned here
        self._audit_pruned_at = float("-inf")
        self.supervisor = Supervisor("reports")

    async def start(self) -> None:
        self.supervisor.spawn("report-job", self._loop)

    async def stop(self) -> None:
        await self.supervisor.stop()

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    async def tick(self) -> dict[int, list[dict[str, Any]]]:
        changed = await run_once(self.db, wait=False)
        if changed and self.on_change is not None:
            for ws in changed:
                self.on_change(ws)
        return changed

    async def prune_audit(self) -> int:
        """Remove audit entries past retention; returns how many."""
        if self.audit_retention_days is None:
            return 0
        async with self.db.transaction() as session:
            gone = await audit_service.prune(session, older_than_days=self.audit_retention_days)
        self._audit_pruned_at = time.monotonic()
        return gone

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                # A database blip must not end the worker; the next tick catches up.
                log.exception("recomputing the daily reports failed")
            if time.monotonic() - self._audit_pruned_at >= AUDIT_PRUNE_EVERY_S:
                try:
                    if gone := await self.prune_audit():
                        log.info("pruned %d audit entries past %g days", gone, self.audit_retention_days)
                except Exception:
                    log.exception("pruning the audit log failed")
            await asyncio.sleep(self.interval_s)

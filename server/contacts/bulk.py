"""Bulk actions on a search: tag, untag or delete every contact matching `q`/`tag`.

The selection is the contact list's own (`server/contacts/search.py`), bounded by the newest
contact id when the job starts, so contacts created meanwhile are not touched. A job is a
`bulk_job` row run in the background of a web process: chunks of `chunk_rows` contacts in id order
(a keyset cursor `last_id`), each ONE transaction that locks its contacts (PostgreSQL), applies the
action set-wise (one UPDATE executemany for the tags, one DELETE), writes their audit rows through
the recorder's bulk form (`changes.record_bulk`), moves the cursor and the counters, and emits one
`bulk.progress` event (topic `contacts`). A chunk that commits is never applied again; a job
stopped at any point resumes after its last committed chunk.

A delete does what `DELETE /contacts/{id}` does: the row goes, the database takes its identities,
consent and conversations with it and keeps its messages (contact set to NULL), and its history
keeps a `deleted` row at the version after its last. Like an import, no `contact.*` event per
contact: the chunk's progress event lists the ids it changed (docs/decisions.md).

Leases, resumption and expiry are `server/jobs.py`'s (shared with imports); one job per workspace
runs at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts import changes as recorder
from server.contacts.changes import lock_workspace
from server.contacts.models import BulkJob, Contact
from server.contacts.schemas import MAX_TAGS
from server.contacts.search import contact_filter, list_query
from server.db import Database, dialect_of, utcnow
from server.events.service import emit
from server.jobs import LeasedJobs, LeaseLost

log = logging.getLogger("switchboard.contacts.bulk")

Action = Literal["tag", "untag", "delete"]
ACTIONS: tuple[Action, ...] = ("tag", "untag", "delete")


class BulkBusy(Exception):
    """The workspace already runs a bulk action: try again when it finishes."""


@dataclass(frozen=True)
class BulkConfig:
    chunk_rows: int = 1000
    lease_s: float = 30.0
    job_ttl_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> BulkConfig:
        return cls(
            chunk_rows=settings.bulk_chunk_rows,
            lease_s=settings.bulk_lease_s,
            job_ttl_s=settings.bulk_job_ttl_s,
        )


@dataclass
class _Job:
    """What the running task knows of its job row (it alone writes it, fenced by the lease)."""

    id: int
    workspace_id: int
    user_id: int | None
    api_key_id: int | None
    action: Action
    tag: str | None
    q: str | None
    ftag: str | None  # the filter's tag (`tag` is the one the action adds or removes)
    total: int
    max_id: int
    last_id: int
    processed: int
    changed: int

    @classmethod
    def of(cls, row: BulkJob) -> _Job:
        action: Action = "delete" if row.action == "delete" else "untag" if row.action == "untag" else "tag"
        return cls(
            id=row.id,
            workspace_id=row.workspace_id,
            user_id=row.user_id,
            api_key_id=row.api_key_id,
            action=action,
            tag=row.tag,
            q=(row.filter or {}).get("q"),
            ftag=(row.filter or {}).get("tag"),
            total=row.total,
            max_id=row.max_id,
            last_id=row.last_id,
            processed=row.processed,
            changed=row.changed,
        )


def _progress(job: _Job, ids: list[int], *, done: bool, error: str | None = None) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "action": job.action,
        "processed": job.processed,
        "changed": job.changed,
        "total": job.total,
        "contact_ids": ids,  # the contacts this chunk changed (deleted ones can no longer be read)
        "done": done,
        "error": error,
        "refresh": "contacts",  # the contacts list changed: reload it (no contact.* event per contact)
    }


def as_status(row: BulkJob) -> dict[str, Any]:
    return {
        "job_id": row.id,
        "status": row.status,
        "action": row.action,
        "tag": row.tag,
        "filter": row.filter,
        "total": row.total,
        "processed": row.processed,
        "changed": row.changed,
        "done": row.status != "running",
        "error": row.error,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


COUNT_CAP = 10_000  # a page shows "10,000+" rather than counting a million rows on every load


async def count_matching(
    session: AsyncSession, *, workspace_id: int, q: str | None, tag: str | None, cap: int = COUNT_CAP
) -> int:
    """How many contacts a bulk action on this filter would select now, counted up to `cap + 1`
    (more than `cap` means "more than `cap`": the page's cost does not grow with the table)."""
    where = contact_filter(dialect_of(session), workspace_id=workspace_id, q=q, tag=tag)
    some = select(Contact.id).where(*where).limit(cap + 1).subquery()
    return int((await session.execute(select(func.count()).select_from(some))).scalar_one())


class BulkActions(LeasedJobs):
    """Runs this instance's bulk actions and resumes the ones whose instance went away (a
    component, `services.bulk`; see the module docstring)."""

    def __init__(
        self, db: Database, config: BulkConfig, *, on_commit: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(
            db, BulkJob, name="bulk", sweep_name="bulk-sweep", lease_s=config.lease_s, ttl_s=config.job_ttl_s
        )
        self.chunk_rows = config.chunk_rows
        self.on_commit = on_commit  # called with the workspace id after each chunk commits

    async def submit(
        self,
        *,
        workspace_id: int,
        user_id: int | None,
        api_key_id: int | None,
        action: Action,
        tag: str | None,
        q: str | None,
        ftag: str | None,
        audit: Callable[[AsyncSession, BulkJob], None],
    ) -> BulkJob:
        """Record the job (and, through `audit`, its audit entry) and start it here;
        `BulkBusy` while the workspace runs another."""
        now = utcnow()
        async with self.db.transaction() as s:
            await lock_workspace(s, workspace_id)  # the check and the insert, one at a time
            if await self.running(s, workspace_id, now) >= 1:
                raise BulkBusy(workspace_id)
            max_id = (
                await s.execute(select(func.max(Contact.id)).where(Contact.workspace_id == workspace_id))
            ).scalar_one()
            where = contact_filter(dialect_of(s), workspace_id=workspace_id, q=q, tag=ftag)
            total = (
                await s.execute(select(func.count(Contact.id)).where(*where, Contact.id <= (max_id or 0)))
            ).scalar_one()
            row = BulkJob(
                workspace_id=workspace_id,
                user_id=user_id,
                api_key_id=api_key_id,
                action=action,
                tag=tag,
                filter={k: v for k, v in (("q", q), ("tag", ftag)) if v is not None},
                status="running",
                total=int(total),
                processed=0,
                changed=0,
                max_id=int(max_id or 0),
                last_id=0,
                owner=self.owner,
                lease_until=self.lease(now),
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.flush()
            audit(s, row)
        self._launch(_Job.of(row))
        return row

    def _launch(self, job: _Job) -> None:
        self.launch(job.id, self._run(job), f"contact-bulk-{job.id}")

    async def status(self, workspace_id: int, job_id: int) -> dict[str, Any] | None:
        """A job's state (from the database: any instance answers)."""
        async with self.db.transaction() as s:
            row = (
                await s.execute(
                    select(BulkJob).where(BulkJob.id == job_id, BulkJob.workspace_id == workspace_id)
                )
            ).scalar_one_or_none()
        return None if row is None else as_status(row)

    # --- running one job ------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        try:
            while not self.stopping:  # stopped: handed back by stop(), resumed by the next start
                done = await self._chunk(job)
                if self.on_commit is not None:
                    self.on_commit(job.workspace_id)
                if done:
                    return
        except LeaseLost:
            log.warning("bulk action %s: another instance took it over; stopping here", job.id)
        except Exception as exc:
            log.exception("bulk action %s failed", job.id)
            await self._fail(job, f"{exc.__class__.__name__}: stopped after {job.processed} contacts")

    async def _chunk(self, job: _Job) -> bool:
        """Apply the action to the next chunk in one transaction; True when the job is done."""
        now = utcnow()
        async with self.db.transaction() as s:
            dialect = dialect_of(s)
            stmt = (
                list_query(
                    dialect,
                    workspace_id=job.workspace_id,
                    q=job.q,
                    tag=job.ftag,
                    before_id=None,
                    columns=(Contact.id, Contact.tags, Contact.version),
                )
                .where(Contact.id > job.last_id, Contact.id <= job.max_id)
                .order_by(None)
                .order_by(Contact.id)
                .limit(self.chunk_rows)
            )
            if dialect == "postgresql":
                stmt = stmt.with_for_update(of=Contact)  # a concurrent PATCH waits, or we wait for it
            rows = (await s.execute(stmt)).all()
            ids = await self._apply(s, job, rows, now)
            processed = job.processed + len(rows)
            changed = job.changed + len(ids)
            last_id = rows[-1].id if rows else job.last_id
            done = len(rows) < self.chunk_rows
            values: dict[str, Any] = {
                "processed": processed,
                "changed": changed,
                "last_id": last_id,
                "updated_at": now,
                "lease_until": self.lease(now),
            }
            if done:
                values.update(status="done", finished_at=now, owner=None, lease_until=None)
            await self.fence(s, job.id, values)
            job.processed, job.changed, job.last_id = processed, changed, last_id
            await emit(s, job.workspace_id, "bulk.progress", _progress(job, ids, done=done))
        return done

    async def _apply(self, s: AsyncSession, job: _Job, rows: list[Any], now: dt.datetime) -> list[int]:
        """The action on these contacts, set-wise; the ids it changed."""
        ws = job.workspace_id

        def audit_row(contact_id: int, name: str, old: Any, new: Any, version: int) -> dict[str, Any]:
            return recorder.bulk_audit(
                ws, contact_id, name, old, new, version=version, at=now, by=job.user_id, by_key=job.api_key_id
            )

        if job.action == "delete":
            ids = [r.id for r in rows]
            if ids:
                await recorder.record_bulk(
                    s, [audit_row(r.id, "deleted", False, True, r.version + 1) for r in rows]
                )
                await s.execute(
                    delete(Contact)
                    .where(Contact.workspace_id == ws, Contact.id.in_(ids))
                    .execution_options(synchronize_session=False)
                )
            return ids
        updates: list[dict[str, Any]] = []
        audit: list[dict[str, Any]] = []
        for r in rows:
            old = list(r.tags or [])
            if job.action == "tag":
                if job.tag in old or len(old) >= MAX_TAGS:
                    continue
                new = [*old, job.tag]
            else:
                if job.tag not in old:
                    continue
                new = [t for t in old if t != job.tag]
            version = r.version + 1
            updates.append({"id": r.id, "tags": new, "version": version, "updated_at": now})
            audit.append(audit_row(r.id, "tags", old, new, version))
        if updates:
            await s.execute(update(Contact), updates)
            await recorder.record_bulk(s, audit)
        return [u["id"] for u in updates]

    async def _fail(self, job: _Job, error: str) -> None:
        now = utcnow()
        try:
            async with self.db.transaction() as s:
                await s.execute(
                    update(BulkJob)
                    .where(BulkJob.id == job.id, BulkJob.status == "running")
                    .values(
                        status="failed",
                        error=error[:500],
                        finished_at=now,
                        updated_at=now,
                        owner=None,
                        lease_until=None,
                    )
                )
                await emit(s, job.workspace_id, "bulk.progress", _progress(job, [], done=True, error=error))
        except Exception:
            log.exception("recording the end of bulk action %s failed", job.id)

    # --- the sweep (server/jobs.py) -------------------------------------------------------------

    async def adopt(self, job: Any, now: dt.datetime, lease: dt.datetime) -> None:
        """A bulk job's state is all in its row: any instance resumes it after its last chunk."""
        if await self.claim(job.id, now, lease):
            log.info("resuming bulk action %s after contact %s", job.id, job.last_id)
            self._launch(_Job.of(job))

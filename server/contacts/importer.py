"""CSV import of contacts: good rows are kept, bad rows are reported with their line number.

Rows are created in batches, one transaction each; every batch also emits an `import.progress`
event (topic `contacts`) in the same transaction, so the progress a browser sees is committed."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from server.contacts.schemas import ContactIn
from server.contacts.service import DuplicateEmail, create_contact
from server.db import Database
from server.errors import is_unavailable, validation_errors
from server.events.service import emit

log = logging.getLogger("switchboard.contacts.import")

BATCH_SIZE = 200
MAX_ROWS = 100_000
MAX_REJECTED_KEPT = 500  # per job, for the status endpoint; each event carries its batch's
# Jobs live in this process's memory until job state moves to the database: bounded by how many
# run at once per workspace (the rest are told to retry), how long a finished job is remembered
# (`import_job_ttl_s`), and how many finished jobs each workspace keeps.
MAX_RUNNING_PER_WORKSPACE = 2
FINISHED_TTL_S = 3600.0
MAX_FINISHED_PER_WORKSPACE = 20
KNOWN = ("name", "email", "phone", "tags")


class ImportRefused(ValueError):
    """The file itself cannot be imported (not CSV, no header, too many rows)."""


class TooManyImports(Exception):
    """The workspace already runs as many imports as allowed: try again when one finishes."""


@dataclass
class Row:
    line: int
    values: dict[str, str]


@dataclass
class ImportJob:
    id: str
    workspace_id: int
    user_id: int | None
    total: int
    processed: int = 0
    created: int = 0
    rejected_count: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    finished_at: float | None = None  # monotonic; set when the job stops for good

    def stopped(self) -> None:
        """Finished, failed or cancelled (even before it started): it no longer runs."""
        self.finished_at = time.monotonic()

    def progress(self, new_rejected: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "total": self.total,
            "processed": self.processed,
            "created": self.created,
            "rejected_count": self.rejected_count,
            "rejected": new_rejected,
            "done": self.done,
            "error": self.error,
        }

    def status(self) -> dict[str, Any]:
        out = self.progress(self.rejected)
        out["status"] = "failed" if self.error else ("done" if self.done else "running")
        return out


def parse_csv(raw: bytes) -> list[Row]:
    """Rows keyed by lower-cased header; `line` is the row's line number in the file (header = 1)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused("The file is not UTF-8 text.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRefused("The file is empty: a header row is expected.") from None
    except csv.Error as exc:
        raise ImportRefused(f"The file is not valid CSV: {exc}") from None
    names = [h.strip().lower() for h in header]
    if not any(n in KNOWN for n in names):
        raise ImportRefused("The header must name at least one of: name, email, phone, tags.")
    rows: list[Row] = []
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= MAX_ROWS:
                raise ImportRefused(f"At most {MAX_ROWS} rows per import.")
            rows.append(Row(reader.line_num, {n: v for n, v in zip(names, values, strict=False) if n}))
    except csv.Error as exc:
        raise ImportRefused(f"Line {reader.line_num} is not valid CSV: {exc}") from None
    return rows


def to_contact(row: Row) -> dict[str, Any]:
    """The contact fields of a row; raises ValidationError as the API would."""
    v = row.values
    tags = [t.strip() for t in v.get("tags", "").replace("|", ";").split(";") if t.strip()]
    attributes = {k: val for k, val in v.items() if k not in KNOWN and val.strip() != ""}
    data = ContactIn.model_validate(
        {
            "name": v.get("name", "").strip(),
            "email": v.get("email", "").strip() or None,
            "phone": v.get("phone", "").strip() or None,
            "tags": tags,
            "attributes": attributes,
        }
    )
    return data.model_dump()


async def run_batch(db: Database, job: ImportJob, batch: list[Row]) -> None:
    new_rejected: list[dict[str, Any]] = []
    async with db.transaction() as s:
        for row in batch:
            try:
                data = to_contact(row)
            except ValidationError as exc:
                new_rejected.append({"row": row.line, "errors": validation_errors(exc)})
                continue
            try:
                async with s.begin_nested():
                    await create_contact(s, workspace_id=job.workspace_id, user_id=job.user_id, data=data)
            except DuplicateEmail:
                new_rejected.append(
                    {
                        "row": row.line,
                        "errors": [{"field": "email", "message": "already used by another contact"}],
                    }
                )
                continue
            except DBAPIError as exc:
                # The database refused this row alone (rolled back to its savepoint): report it and
                # keep the batch. An unreachable database stops the import instead.
                if is_unavailable(exc):
                    raise
                log.warning("import %s: row %d refused by the database: %s", job.id, row.line, exc.orig)
                new_rejected.append(
                    {
                        "row": row.line,
                        "errors": [{"field": "row", "message": "the database refused this row"}],
                    }
                )
                continue
            job.created += 1
        job.processed += len(batch)
        job.rejected_count += len(new_rejected)
        job.done = job.processed >= job.total
        room = MAX_REJECTED_KEPT - len(job.rejected)
        job.rejected.extend(new_rejected[: max(room, 0)])
        await emit(s, job.workspace_id, "import.progress", job.progress(new_rejected))


class Importer:
    """Runs imports in the background of one app and remembers them for the status endpoint.
    A component: stopping it cancels the imports still running (their committed batches stay)."""

    def __init__(
        self,
        db: Database,
        *,
        on_commit: Any = None,
        batch_size: int = BATCH_SIZE,
        max_running_per_workspace: int = MAX_RUNNING_PER_WORKSPACE,
        finished_ttl_s: float = FINISHED_TTL_S,
    ) -> None:
        self.db = db
        self.on_commit = on_commit  # called with the workspace id after each batch commits
        self.batch_size = batch_size
        self.max_running_per_workspace = max_running_per_workspace
        self.finished_ttl_s = finished_ttl_s
        self.jobs: dict[str, ImportJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, *, workspace_id: int, user_id: int | None, rows: list[Row]) -> ImportJob:
        """Start an import; `TooManyImports` when the workspace already runs its share."""
        self.expire()
        running = sum(
            1 for j in self.jobs.values() if j.workspace_id == workspace_id and j.finished_at is None
        )
        if running >= self.max_running_per_workspace:
            raise TooManyImports(workspace_id)
        job = ImportJob(id=uuid.uuid4().hex, workspace_id=workspace_id, user_id=user_id, total=len(rows))
        self.jobs[job.id] = job
        task = asyncio.create_task(self._run(job, rows), name=f"contact-import-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _task: job.stopped())
        return job

    def get(self, workspace_id: int, job_id: str) -> ImportJob | None:
        self.expire()
        job = self.jobs.get(job_id)
        return job if job is not None and job.workspace_id == workspace_id else None

    def expire(self) -> None:
        """Forget finished jobs older than `finished_ttl_s`, and all but the newest
        MAX_FINISHED_PER_WORKSPACE finished jobs of each workspace."""
        now = time.monotonic()
        kept: dict[int, int] = {}
        newest_first = sorted(self.jobs.values(), key=lambda j: -(j.finished_at or now))
        for job in newest_first:
            if job.finished_at is None:
                continue
            kept[job.workspace_id] = kept.get(job.workspace_id, 0) + 1
            if (
                now - job.finished_at >= self.finished_ttl_s
                or kept[job.workspace_id] > MAX_FINISHED_PER_WORKSPACE
            ):
                del self.jobs[job.id]

    async def _run(self, job: ImportJob, rows: list[Row]) -> None:
        try:
            if not rows:
                job.done = True
                async with self.db.transaction() as s:
                    await emit(s, job.workspace_id, "import.progress", job.progress([]))
            for start in range(0, len(rows), self.batch_size):
                await run_batch(self.db, job, rows[start : start + self.batch_size])
                if self.on_commit is not None:
                    self.on_commit(job.workspace_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("contact import %s failed", job.id)
            job.error = f"{exc.__class__.__name__}: the import stopped after {job.processed} rows"
            job.done = True
            try:
                async with self.db.transaction() as s:
                    await emit(s, job.workspace_id, "import.progress", job.progress([]))
            except Exception:
                log.exception("reporting the failed import %s failed", job.id)

    async def wait(self) -> None:
        """Until every running import has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

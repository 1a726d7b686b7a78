"""CSV import of contacts: good rows are kept, bad rows are reported with their line number.

An upload is spooled to disk (server/contacts/import_file.py) and becomes an `import_job` row;
the importer reads it in batches (`import_batch_rows`), each written set-wise in ONE transaction
(server/contacts/import_write.py) together with its rejected rows, the job's new counters and
byte offset, and one `import.progress` event (topic `contacts`). So the progress a browser sees is
committed, and a job stopped at any point resumes after its last committed batch: every row is
imported exactly once.

Which instance runs a job is a lease on its row (`owner`, `lease_until`), renewed while it runs;
every batch's write is fenced by it (server/jobs.py, shared with bulk actions). An instance that
finds a job whose lease ran out resumes it if it has its upload on disk, or ends it `failed` when
the upload is gone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from annotated_types import MaxLen
from pydantic import ValidationError
from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.models import ConsentState
from server.contacts.changes import lock_workspace
from server.contacts.import_file import KNOWN, CsvRows, ImportRefused, Row, remove
from server.contacts.import_file import parse_csv as parse_csv
from server.contacts.import_write import Mode, Rec, write_batch
from server.contacts.models import ImportJob, ImportRejectedRow
from server.contacts.schemas import ContactIn, check_attributes, normalize_tags
from server.db import Database, utcnow
from server.errors import validation_errors
from server.events.service import emit
from server.export import unneutralise
from server.jobs import LeasedJobs, LeaseLost
from server.validators import normalize_email, normalize_phone, refuse_unstorable

log = logging.getLogger("switchboard.contacts.import")

# Columns our own export writes beside the fields: `attributes` (a JSON object) is read back as the
# attributes it holds; `id`, `created_at` and `updated_at` are Switchboard's and not imported (a
# column of another system's ids keeps its data under another name, e.g. `crm_id`).
PACKED_ATTRIBUTES = "attributes"
EXPORT_ONLY = frozenset({"id", "created_at", "updated_at"})
# Optional consent columns (what the export writes): recorded in the consent ledger, never attributes.
CONSENT_COLUMNS = {"email_consent": "email", "sms_consent": "sms", "whatsapp_consent": "whatsapp"}
CONSENT_WORDS = {
    **dict.fromkeys(("opted_in", "yes", "true", "1", "subscribed"), ConsentState.opted_in),
    **dict.fromkeys(("opted_out", "no", "false", "0", "unsubscribed"), ConsentState.opted_out),
}
CONSENT_HINT = "must be opted_in or opted_out (or yes/no, true/false, 1/0, subscribed/unsubscribed)"
# Columns that are not attributes under their own name.
_NOT_ATTRIBUTES = frozenset({*KNOWN, *CONSENT_COLUMNS, *EXPORT_ONLY, PACKED_ATTRIBUTES})
MAX_REJECTED_KEPT = 10_000  # rejected rows kept per job (the count goes on)
EVENT_REJECTED_MAX = 100  # rejected rows carried by one progress event (the rest: status endpoint)
# A job whose lease ran out and whose upload is on no instance that looked is failed after this:
# its instance (the only one holding the upload) did not come back.
ORPHAN_FAIL_AFTER = dt.timedelta(hours=1)

__all__ = [
    "ImportConfig",
    "ImportRefused",
    "Importer",
    "LeaseLost",
    "TooManyImports",
    "parse_csv",
    "to_contact",
]


class TooManyImports(Exception):
    """The workspace already runs as many imports as allowed: try again when one finishes."""


class RowRejected(ValueError):
    """A row that cannot be imported, with its errors (`{"field", "message"}`)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def to_contact(row: Row) -> Rec:
    """The contact fields and consent of a row; raises RowRejected with every error found. A cell
    our export neutralised (`'+1415…`) reads as it was, so an export imports back."""
    v = row.values
    if any(val[:1] == "'" for val in v.values()):
        v = {k: unneutralise(val) for k, val in v.items()}
    tags = [t.strip() for t in v.get("tags", "").replace("|", ";").split(";") if t.strip()]
    attributes = _packed(v.get(PACKED_ATTRIBUTES, ""))
    attributes.update((k, val) for k, val in v.items() if k not in _NOT_ATTRIBUTES and val.strip() != "")
    consent, errors = _consent(v)
    raw = {
        "name": v.get("name", "").strip(),
        "email": v.get("email", "").strip() or None,
        "phone": v.get("phone", "").strip() or None,
        "tags": tags,
        "attributes": attributes,
    }
    data = _validated(raw)
    if data is None:  # some check failed: ContactIn says which, as the API would
        try:
            data = ContactIn.model_validate(raw).model_dump()
        except ValidationError as exc:
            raise RowRejected(validation_errors(exc) + errors) from None
    if errors:
        raise RowRejected(errors)
    given = frozenset(k for k in ("name", "phone", "tags") if raw[k])
    return Rec(row.line, data, given, consent)


def _max_length(name: str) -> int:
    return next(m.max_length for m in ContactIn.model_fields[name].metadata if isinstance(m, MaxLen))


# ContactIn's bounds, read from the model so that the two cannot differ.
_NAME_MAX, _EMAIL_MAX, _PHONE_MAX = (_max_length(f) for f in ("name", "email", "phone"))


def _validated(raw: dict[str, Any]) -> dict[str, Any] | None:
    """What `ContactIn.model_validate(raw).model_dump()` gives for a row as `to_contact` builds
    it (text only, but for the attributes of a JSON cell), by the model's checks and normalisers
    called directly: building a model per row was most of an import's time. None when any check
    fails; then the model itself runs, to name the errors as the API does."""
    name, email, phone, tags, attributes = (
        raw["name"], raw["email"], raw["phone"], raw["tags"], raw["attributes"]
    )  # fmt: skip
    if len(name) > _NAME_MAX or len(email or "") > _EMAIL_MAX or len(phone or "") > _PHONE_MAX:
        return None
    try:
        # refuse_unstorable: for text, no NUL (one look at all of it); a JSON cell's values, walked.
        text = [name, email or "", phone or "", *tags, *attributes]
        if all(type(a) is str for a in attributes.values()):
            text += attributes.values()
        else:
            refuse_unstorable(attributes)
        if "\x00" in "".join(text):
            return None
        data = {
            "name": name,
            "email": normalize_email(email) if email else None,
            "phone": normalize_phone(phone) if phone else None,
            "attributes": check_attributes(attributes),
            "tags": normalize_tags(tags),
        }
    except Exception:  # whatever it is, the model answers it as it always did
        return None
    return data


def _packed(cell: str) -> dict[str, Any]:
    """The attributes of an `attributes` cell: a JSON object, as the export writes it (and as
    listmonk's importer reads it). Anything else stays one text attribute of that name."""
    text = cell.strip()
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return dict(value) if isinstance(value, dict) else {PACKED_ATTRIBUTES: cell}


def _consent(values: dict[str, str]) -> tuple[dict[str, ConsentState], list[dict[str, str]]]:
    """The consent columns of a row: an empty cell changes nothing, an unknown word is an error."""
    consent: dict[str, ConsentState] = {}
    errors: list[dict[str, str]] = []
    for column, channel in CONSENT_COLUMNS.items():
        word = values.get(column, "").strip()
        if not word:
            continue
        state = CONSENT_WORDS.get(word.lower())
        if state is None:
            errors.append({"field": column, "message": f"{CONSENT_HINT}, not {word[:40]!r}"})
        else:
            consent[channel] = state
    return consent, errors


@dataclass(slots=True)
class Batch:
    recs: list[Rec]
    rejected: list[dict[str, Any]]  # rows refused before the database (validation, NUL, UTF-8)
    rows: int  # rows it covers (recs + rejected)
    offset: int  # byte offset after its last row
    line: int
    last: bool  # nothing follows


class BatchReader:
    """Cuts a job's rows into batches; a batch ends early before a row whose key (email, or phone
    for rows without one) it already holds, so one set-wise write never sees a key twice."""

    def __init__(self, rows: CsvRows, size: int) -> None:
        self.rows = rows
        self.size = size
        self._held: tuple[Row, int, int] | None = None  # a row read past the end of the last batch

    def _next(self) -> tuple[Row, int, int] | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        row = next(self.rows, None)
        return None if row is None else (row, self.rows.offset, self.rows.line)

    def next_batch(self) -> Batch | None:
        recs: list[Rec] = []
        rejected: list[dict[str, Any]] = []
        keys: set[tuple[str, str]] = set()
        offset = line = count = 0
        while count < self.size:
            item = self._next()
            if item is None:
                break
            row, end, end_line = item
            rec: Rec | None = None
            if row.problem is not None:
                rejected.append(
                    {"row": row.line, "errors": [{"field": row.problem[0], "message": row.problem[1]}]}
                )
            else:
                try:
                    rec = to_contact(row)
                except RowRejected as exc:
                    rejected.append({"row": row.line, "errors": exc.errors})
            if rec is not None:
                key = rec.key()
                if key is not None and key in keys:
                    self._held = item
                    break
                if key is not None:
                    keys.add(key)
                recs.append(rec)
            offset, line, count = end, end_line, count + 1
        if count == 0:
            return None
        if self._held is None:
            self._held = self._next()  # look ahead: is this batch the last?
        return Batch(recs, rejected, count, offset, line, last=self._held is None)


@dataclass(frozen=True)
class ImportConfig:
    directory: Path
    batch_rows: int = 5000
    jobs_per_workspace: int = 2
    job_ttl_s: float = 3600.0
    lease_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> ImportConfig:
        return cls(
            directory=Path(settings.import_dir),
            batch_rows=settings.import_batch_rows,
            jobs_per_workspace=settings.import_jobs_per_workspace,
            job_ttl_s=settings.import_job_ttl_s,
            lease_s=settings.import_lease_s,
        )


@dataclass
class _Job:
    """What the running task knows of its job row (it alone writes it, fenced by the lease)."""

    id: int
    workspace_id: int
    user_id: int | None
    mode: Mode
    total: int
    path: str
    offset: int
    line: int
    counts: dict[str, int] = field(default_factory=dict)  # processed, created, updated, rejected_count


def _progress(
    job: _Job, new_rejected: list[dict[str, Any]], *, done: bool, error: str | None = None
) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "mode": job.mode,
        "total": job.total,
        **job.counts,
        "rejected": new_rejected[:EVENT_REJECTED_MAX],
        "done": done,
        "error": error,
        "refresh": "contacts",  # the contacts list changed: reload it (no contact.* event per row)
    }


class Importer(LeasedJobs):
    """Runs this instance's imports and resumes or fails the ones whose instance went away.
    A component: stopping it stops its imports after their last committed batch and hands them
    back (another start, here or elsewhere, resumes them)."""

    def __init__(
        self, db: Database, config: ImportConfig, *, on_commit: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(
            db,
            ImportJob,
            name="importer",
            sweep_name="import-sweep",
            lease_s=config.lease_s,
            ttl_s=config.job_ttl_s,
        )
        self.config = config
        self.batch_size = config.batch_rows
        self.on_commit = on_commit  # called with the workspace id after each batch commits

    async def start(self) -> None:
        await asyncio.to_thread(self.config.directory.mkdir, parents=True, exist_ok=True)
        await super().start()

    # --- jobs -----------------------------------------------------------------------------------

    def upload_path(self) -> Path:
        """Where a new upload is spooled."""
        return self.config.directory / f"upload-{uuid.uuid4().hex}.csv"

    async def submit(
        self, *, workspace_id: int, user_id: int | None, mode: Mode, path: Path, total: int
    ) -> int:
        """Record the job and start it here; `TooManyImports` when the workspace runs its share."""
        now = utcnow()
        async with self.db.transaction() as s:
            await lock_workspace(s, workspace_id)  # the count and the insert, one at a time
            if await self.running(s, workspace_id, now) >= self.config.jobs_per_workspace:
                raise TooManyImports(workspace_id)
            job = ImportJob(
                workspace_id=workspace_id,
                user_id=user_id,
                mode=mode,
                status="running",
                total=total,
                path=str(path),
                host=self.host,
                owner=self.owner,
                lease_until=self.lease(now),
                created_at=now,
                updated_at=now,
            )
            s.add(job)
            await s.flush()
            state = self._state(job)
        self._launch(state)
        return state.id

    def _state(self, job: ImportJob) -> _Job:
        return _Job(
            id=job.id,
            workspace_id=job.workspace_id,
            user_id=job.user_id,
            mode="upsert" if job.mode == "upsert" else "create",
            total=job.total,
            path=job.path or "",
            offset=job.byte_offset or 0,
            line=job.line or 0,
            counts={
                "processed": job.processed or 0,
                "created": job.created or 0,
                "updated": job.updated or 0,
                "rejected_count": job.rejected_count or 0,
            },
        )

    def _launch(self, job: _Job) -> None:
        self.launch(job.id, self._run(job), f"contact-import-{job.id}")

    async def status(self, workspace_id: int, job_id: int) -> dict[str, Any] | None:
        """A job's state as the status endpoint shows it (from the database: any instance)."""
        async with self.db.transaction() as s:
            job = (
                await s.execute(
                    select(ImportJob).where(ImportJob.id == job_id, ImportJob.workspace_id == workspace_id)
                )
            ).scalar_one_or_none()
            if job is None:
                return None
            rejected = (
                await s.execute(
                    select(ImportRejectedRow.line, ImportRejectedRow.errors)
                    .where(ImportRejectedRow.job_id == job_id)
                    .order_by(ImportRejectedRow.line, ImportRejectedRow.id)
                    .limit(MAX_REJECTED_KEPT)
                )
            ).all()
        return {
            "job_id": job.id,
            "status": job.status,
            "mode": job.mode,
            "total": job.total,
            "processed": job.processed,
            "created": job.created,
            "updated": job.updated,
            "rejected_count": job.rejected_count,
            "rejected": [{"row": line, "errors": errors} for line, errors in rejected],
            "done": job.status != "running",
            "error": job.error,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
        }

    # --- running one job ------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        try:
            await self._import(job)
        except LeaseLost:
            log.warning("contact import %s: another instance took it over; stopping here", job.id)
        except Exception as exc:
            log.exception("contact import %s failed", job.id)
            if isinstance(exc, ImportRefused):
                error = str(exc)
            else:
                error = f"{exc.__class__.__name__}: the import stopped after {job.counts['processed']} rows"
            await self._finish(job, error=error)

    async def _import(self, job: _Job) -> None:
        f = await asyncio.to_thread(open, job.path, "rb")
        try:
            rows = await asyncio.to_thread(CsvRows, f)
            rows.seek(job.offset, job.line)
            reader = BatchReader(rows, self.batch_size)
            # Parse the next batch in a thread while the database writes this one.
            pending = asyncio.ensure_future(asyncio.to_thread(reader.next_batch))
            try:
                batch = await pending
                if batch is None:
                    await self._finish(job)
                    return
                while batch is not None:
                    if self.stopping:
                        return  # handed back by stop(): the upload stays for whoever resumes it
                    pending = asyncio.ensure_future(
                        asyncio.to_thread(reader.next_batch) if not batch.last else _none()
                    )
                    await self._commit(job, batch)
                    if self.on_commit is not None:
                        self.on_commit(job.workspace_id)
                    batch = await pending
            finally:
                if not pending.done():
                    await asyncio.gather(pending, return_exceptions=True)  # the thread reads the file
        finally:
            await asyncio.to_thread(f.close)
        remove(job.path)

    async def _commit(self, job: _Job, batch: Batch) -> None:
        now = utcnow()
        async with self.db.transaction() as s:
            outcome = await write_batch(
                s,
                workspace_id=job.workspace_id,
                user_id=job.user_id,
                job_id=job.id,
                mode=job.mode,
                recs=batch.recs,
            )
            rejected = sorted(batch.rejected + outcome.rejected, key=lambda r: r["row"])
            room = max(MAX_REJECTED_KEPT - job.counts["rejected_count"], 0)
            if rejected[:room]:
                await s.execute(
                    insert(ImportRejectedRow),
                    [{"job_id": job.id, "line": r["row"], "errors": r["errors"]} for r in rejected[:room]],
                )
            counts = {
                "processed": job.counts["processed"] + batch.rows,
                "created": job.counts["created"] + outcome.created,
                "updated": job.counts["updated"] + outcome.updated,
                "rejected_count": job.counts["rejected_count"] + len(rejected),
            }
            done = batch.last
            values: dict[str, Any] = {
                **counts,
                "byte_offset": batch.offset,
                "line": batch.line,
                "updated_at": now,
                "lease_until": self.lease(now),
            }
            if done:
                values.update(status="done", finished_at=now, path=None, owner=None, lease_until=None)
            await self.fence(s, job.id, values)
            job.counts = counts
            job.offset, job.line = batch.offset, batch.line
            await emit(s, job.workspace_id, "import.progress", _progress(job, rejected, done=done))

    async def _finish(self, job: _Job, *, error: str | None = None) -> None:
        """End a job that has no batch left to commit (empty file) or that failed."""
        now = utcnow()
        try:
            async with self.db.transaction() as s:
                await s.execute(
                    update(ImportJob)
                    .where(ImportJob.id == job.id, ImportJob.status == "running")
                    .values(
                        status="failed" if error else "done",
                        error=error[:500] if error else None,
                        finished_at=now,
                        updated_at=now,
                        path=None,
                        owner=None,
                        lease_until=None,
                    )
                )
                await emit(s, job.workspace_id, "import.progress", _progress(job, [], done=True, error=error))
        except Exception:
            log.exception("recording the end of import %s failed", job.id)
        remove(job.path)

    # --- the sweep (server/jobs.py): orphans and expiry -----------------------------------------

    async def adopt(self, job: Any, now: dt.datetime, lease: dt.datetime) -> None:
        """Resume an orphaned import if its upload is here, else fail it (on its own host, or
        anywhere once it has been orphaned for `ORPHAN_FAIL_AFTER`)."""
        here: bool = await asyncio.to_thread(_exists, job.path)
        if here:
            if await self.claim(job.id, now, lease):
                log.info("resuming contact import %s at line %s", job.id, job.line)
                job.owner = self.owner
                self._launch(self._state(job))
        elif job.host == self.host or (job.lease_until or now) < now - ORPHAN_FAIL_AFTER:
            if await self.claim(job.id, now, lease):
                await self._finish(
                    self._state(job), error="The upload of this import is gone: it cannot resume."
                )

    async def forget(self, s: AsyncSession, old: ColumnElement[bool]) -> None:
        """Expired jobs take their rejected rows and any upload left with them."""
        paths = [
            p for (p,) in await s.execute(select(ImportJob.path).where(old, ImportJob.path.is_not(None)))
        ]
        ids = select(ImportJob.id).where(old).scalar_subquery()
        await s.execute(delete(ImportRejectedRow).where(ImportRejectedRow.job_id.in_(ids)))
        for p in paths:
            remove(p)


def _exists(path: str | None) -> bool:
    return bool(path) and os.path.exists(path or "")


async def _none() -> None:
    return None

"""`POST /api/v1/contacts/import?mode=create|upsert` (CSV upload, gzip allowed → 202 and a job id;
progress as `import.progress` events) and `GET /api/v1/contacts/import/{job_id}` (any instance)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from server.api import Ctx, Router, json_response
from server.audit import service as audit
from server.contacts.import_file import ImportRefused, UploadTooLarge, count_rows, remove, spool
from server.contacts.importer import TooManyImports
from server.errors import Problem

router = Router(tag="contacts")

IMPORT_RETRY_AFTER_S = 5
MODES = ("create", "upsert")
CSV_TYPES = ("text/csv", "text/plain", "application/csv", "application/gzip", "application/x-gzip")


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


async def _spool_upload(request: Request, path: Path, max_bytes: int) -> None:
    """Stream the upload (raw body or the `file` field of a form) to `path`."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    gzip: bool | None = True if request.headers.get("content-encoding", "").lower() == "gzip" else None
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Problem(
                    422,
                    "Send the CSV as the form field `file`.",
                    errors=[{"field": "file", "message": "required"}],
                )
            if (upload.filename or "").lower().endswith(".gz"):
                gzip = True
            await spool(_file_chunks(upload), path, gzip=gzip, max_bytes=max_bytes)
        return
    if ctype in CSV_TYPES or ctype == "application/octet-stream":
        await spool(request.stream(), path, gzip=gzip, max_bytes=max_bytes)
        return
    raise Problem(415, "Send the CSV as text/csv or as the `file` field of multipart/form-data.")


@router.op(
    "POST",
    "/contacts/import",
    status=202,
    role="agent",
    responses={413: "too large", 415: "not CSV", 422: "bad file", 429: "too many imports running"},
)
async def start_import(ctx: Ctx[None]) -> Response:
    """Import contacts from CSV, optionally gzipped (columns name, email, phone, tags separated by
    `;`, others become attributes). `mode=create` (default) rejects rows whose email is taken;
    `mode=upsert` updates the contact matched by email (or, for rows without one, by phone).
    Answers 202 with `job_id`; progress and rejected rows arrive as `import.progress`."""
    mode = ctx.request.query_params.get("mode", "create")
    if mode not in MODES:
        raise Problem(
            422, "mode is create or upsert.", errors=[{"field": "mode", "message": "create or upsert"}]
        )
    imp = ctx.services.importer
    path = imp.upload_path()
    try:
        await _spool_upload(ctx.request, path, ctx.services.settings.import_max_bytes)
        total = await asyncio.to_thread(count_rows, path)
        job_id = await imp.submit(
            workspace_id=ctx.workspace_id,
            user_id=ctx.principal.by_user,
            mode="upsert" if mode == "upsert" else "create",
            path=path,
            total=total,
        )
    except UploadTooLarge as exc:
        remove(path)
        raise Problem(413, str(exc)) from None
    except ImportRefused as exc:
        remove(path)
        raise Problem(422, str(exc), errors=[{"field": "file", "message": str(exc)}]) from None
    except TooManyImports:
        remove(path)
        raise Problem(
            429,
            "This workspace already runs as many imports as allowed; try again when one finishes.",
            headers={"Retry-After": str(IMPORT_RETRY_AFTER_S)},
        ) from None
    except BaseException:
        remove(path)
        raise
    async with ctx.db.transaction() as s:
        audit.record_for(
            s,
            ctx,
            action="import.started",
            target=f"import:{job_id}",
            details={"rows": total, "mode": mode},
        )
    return json_response({"job_id": job_id, "status": "running", "mode": mode, "total": total}, 202)


@router.op("GET", "/contacts/import/{job_id}", responses={404: "not found"})
async def import_status(ctx: Ctx[None]) -> Response:
    """An import's progress and its rejected rows (the first 10,000, with their count)."""
    found = await ctx.services.importer.status(ctx.workspace_id, ctx.path_int("job_id"))
    if found is None:
        raise Problem(404, "No such import.")
    return json_response(found)

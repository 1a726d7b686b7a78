"""`POST /api/v1/contacts/import` (CSV upload → 202 and a job id; progress as `import.progress`
events) and `GET /api/v1/contacts/import/{job_id}`."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from server.api import Ctx, Router, json_response
from server.audit import service as audit
from server.contacts.importer import ImportRefused, TooManyImports, parse_csv
from server.errors import Problem

router = Router(tag="contacts")

IMPORT_RETRY_AFTER_S = 5


async def _upload(request: Request) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Problem(
                    422,
                    "Send the CSV as the form field `file`.",
                    errors=[{"field": "file", "message": "required"}],
                )
            return await upload.read()
    if ctype in ("text/csv", "text/plain", "application/csv"):
        return await request.body()
    raise Problem(415, "Send the CSV as text/csv or as the `file` field of multipart/form-data.")


@router.op(
    "POST",
    "/contacts/import",
    status=202,
    role="agent",
    responses={415: "not CSV", 422: "bad file", 429: "too many imports running"},
)
async def start_import(ctx: Ctx[None]) -> Response:
    """Import contacts from CSV (columns name, email, phone, tags separated by `;`, others become
    attributes). Answers 202 with `job_id`; progress and rejected rows arrive as `import.progress`."""
    raw = await _upload(ctx.request)
    try:
        rows = parse_csv(raw)
    except ImportRefused as exc:
        raise Problem(422, str(exc), errors=[{"field": "file", "message": str(exc)}]) from None
    try:
        job = ctx.services.importer.submit(
            workspace_id=ctx.workspace_id, user_id=ctx.principal.by_user, rows=rows
        )
    except TooManyImports:
        raise Problem(
            429,
            "This workspace already runs as many imports as allowed; try again when one finishes.",
            headers={"Retry-After": str(IMPORT_RETRY_AFTER_S)},
        ) from None
    # The job runs in memory; its start is recorded on its own (there is no row to commit it with).
    async with ctx.db.transaction() as s:
        audit.record_for(
            s, ctx, action="import.started", target=f"import:{job.id}", details={"rows": job.total}
        )
    return json_response({"job_id": job.id, "status": "running", "total": job.total}, 202)


@router.op("GET", "/contacts/import/{job_id}", responses={404: "not found"})
async def import_status(ctx: Ctx[None]) -> Response:
    """An import's progress and its rejected rows (while this process remembers it)."""
    job = ctx.services.importer.get(ctx.workspace_id, ctx.request.path_params["job_id"])
    if job is None:
        raise Problem(404, "No such import.")
    return json_response(job.status())

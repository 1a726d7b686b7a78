"""`POST /api/v1/contacts/bulk` (a bulk action on every contact matching a search → 202 and a job;
progress as `bulk.progress` events) and `GET /api/v1/contacts/bulk/{job_id}` (any instance)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from server.api import Ctx, Router, Schema, json_response
from server.audit import service as audit
from server.auth.principal import require_role
from server.contacts.bulk import BulkBusy
from server.contacts.models import BulkJob
from server.errors import Problem

router = Router(tag="contacts")

BULK_RETRY_AFTER_S = 5


class BulkFilter(Schema):
    """The search, as `GET /api/v1/contacts?q=&tag=` takes it; `{}` selects every contact."""

    q: str | None = Field(default=None, max_length=200)
    tag: str | None = Field(default=None, max_length=64)


class BulkIn(Schema):
    filter: BulkFilter  # required: `{}` must be said to act on every contact
    action: Literal["tag", "untag", "delete"]
    tag: str | None = Field(default=None, min_length=1, max_length=64)


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "The request is not valid.", errors=[{"field": field, "message": message}])


async def start(ctx: Ctx[Any], body: BulkIn) -> BulkJob:
    """Check, record (audited) and start a bulk action: the API's and the dashboard's one path."""
    tag = body.tag.strip() if body.tag is not None else None
    if body.action == "delete":
        require_role(ctx.principal, "admin")
        if body.tag is not None:
            raise _invalid("tag", "only for tag and untag")
    elif not tag:
        raise _invalid("tag", f"required to {body.action}")

    def record(s: AsyncSession, job: BulkJob) -> None:
        details = {"filter": job.filter, "action": job.action, "tag": job.tag, "count": job.total}
        audit.record_for(s, ctx, action="contacts.bulk", target=f"bulk:{job.id}", details=details)

    try:
        return await ctx.services.bulk.submit(
            workspace_id=ctx.workspace_id,
            user_id=ctx.principal.by_user,
            api_key_id=ctx.principal.api_key_id,
            action=body.action,
            tag=tag,
            q=body.filter.q or None,
            ftag=body.filter.tag or None,
            audit=record,
        )
    except BulkBusy:
        raise Problem(
            429,
            "This workspace already runs a bulk action; try again when it finishes.",
            headers={"Retry-After": str(BULK_RETRY_AFTER_S)},
        ) from None


@router.op(
    "POST",
    "/contacts/bulk",
    body=BulkIn,
    status=202,
    role="agent",
    responses={403: "delete needs admin", 422: "bad request", 429: "a bulk action is running"},
)
async def start_bulk(ctx: Ctx[BulkIn]) -> Response:
    """Tag, untag or delete every contact matching `filter` (as the contact list filters; `{}`:
    all). Tagging needs the agent role, deleting admin. Answers 202 with `job_id` and `total`;
    progress arrives as `bulk.progress` events on `contacts`. One bulk action per workspace at a time."""
    job = await start(ctx, ctx.body)
    return json_response(
        {"job_id": job.id, "status": "running", "action": job.action, "tag": job.tag, "total": job.total},
        202,
    )


@router.op("GET", "/contacts/bulk/{job_id}", responses={404: "not found"})
async def bulk_status(ctx: Ctx[None]) -> Response:
    """A bulk action's progress: `processed` of `total` matching contacts, `changed` of them."""
    found = await ctx.services.bulk.status(ctx.workspace_id, ctx.path_int("job_id"))
    if found is None:
        raise Problem(404, "No such bulk action.")
    return json_response(found)

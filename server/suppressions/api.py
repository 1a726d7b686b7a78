"""`/api/v1/suppressions`: search, add (agent) and lift (admin, audited) suppressed addresses."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from server.api import Ctx, Page, Router, json_response
from server.audit import service as audit
from server.errors import Problem
from server.messages.models import Suppression
from server.pagination import decode_cursor, page_of
from server.suppressions import service
from server.suppressions.schemas import SuppressionIn, SuppressionOut, SuppressionQuery

router = Router(tag="suppressions")
log = logging.getLogger("switchboard.suppressions")


@router.op("GET", "/suppressions", query=SuppressionQuery, response=Page[SuppressionOut])
async def list_suppressions(ctx: Ctx[None]) -> Page[SuppressionOut]:
    """Suppressed addresses, newest first; `q` matches part of the address, `reason` filters."""
    q: SuppressionQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_suppressions(
            s,
            workspace_id=ctx.workspace_id,
            q=q.q,
            reason=q.reason,
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, SuppressionOut.model_validate, Page[SuppressionOut])


@router.op(
    "POST",
    "/suppressions",
    body=SuppressionIn,
    response=SuppressionOut,
    status=201,
    role="agent",
    responses={409: "already suppressed"},
)
async def add(ctx: Ctx[SuppressionIn]) -> Response:
    """Suppress an address by hand (reason `manual`): nothing more is sent to it, whatever the category."""
    try:
        async with ctx.db.transaction() as s:
            row = await service.add_suppression(
                s,
                workspace_id=ctx.workspace_id,
                address=ctx.body.address,
                reason=ctx.body.reason,
                note=ctx.body.note,
                user_id=ctx.principal.user_id,
            )
    except service.AlreadySuppressed:
        raise Problem(
            409,
            "This address is already suppressed.",
            errors=[{"field": "address", "message": "already on the suppression list"}],
        ) from None
    return json_response(SuppressionOut.model_validate(row), 201)


@router.op("DELETE", "/suppressions/{suppression_id}", status=204, role="admin", responses={404: "not found"})
async def lift(ctx: Ctx[None]) -> Response:
    """Lift a suppression (a bounce recorded by mistake): the address is sendable again at once."""
    async with ctx.db.transaction() as s:
        row = await service.lift_suppression(
            s, workspace_id=ctx.workspace_id, suppression_id=ctx.path_int("suppression_id")
        )
        audit_lift(s, ctx, row)
    return Response(status_code=204)


def audit_lift(session: AsyncSession, ctx: Ctx[None], row: Suppression) -> None:
    """Into the admin audit log, in the lift's transaction."""
    details = {"address": row.address, "reason": row.reason, "note": row.note}
    audit.record_for(
        session, ctx, action="suppression.lifted", target=f"suppression:{row.id}", details=details
    )
    log.info(
        "suppression %d lifted by user %s: %s",
        row.id,
        ctx.principal.user_id,
        details,
        extra={"workspace_id": ctx.workspace_id},
    )

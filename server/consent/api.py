"""`/api/v1/contacts/{id}/consent`: the current consent per channel, the ledger, and consent an
agent records."""

from __future__ import annotations

from starlette.responses import Response

from server.api import Ctx, Router, json_response
from server.consent import service
from server.consent.models import ConsentSource, ConsentState
from server.consent.schemas import ConsentIn, ConsentItem, ConsentList, ConsentQuery, LedgerItem
from server.contacts.changes import get_contact
from server.pagination import decode_cursor, page_of

router = Router(tag="consent")


@router.op(
    "GET",
    "/contacts/{contact_id}/consent",
    query=ConsentQuery,
    response=ConsentList,
    responses={404: "not found"},
)
async def get(ctx: Ctx[None]) -> ConsentList:
    """The contact's consent now, per channel and scope; `?history=true`: the ledger, newest first."""
    q: ConsentQuery = ctx.query
    contact_id = ctx.path_int("contact_id")
    async with ctx.db.transaction() as s:
        await get_contact(s, workspace_id=ctx.workspace_id, contact_id=contact_id)
        if not q.history:
            rows = await service.current(s, workspace_id=ctx.workspace_id, contact_id=contact_id)
            return ConsentList(items=[ConsentItem.model_validate(r) for r in rows])
        ledger = await service.history(
            s,
            workspace_id=ctx.workspace_id,
            contact_id=contact_id,
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(ledger, q.limit, LedgerItem.model_validate, ConsentList)


@router.op(
    "POST",
    "/contacts/{contact_id}/consent",
    body=ConsentIn,
    response=ConsentItem,
    role="agent",
    responses={404: "not found"},
)
async def post(ctx: Ctx[ConsentIn]) -> Response:
    """Record consent given to an agent (scope: every sender of the channel). Recording the state
    the contact already has changes nothing (200, no ledger row)."""
    async with ctx.db.transaction() as s:
        done = await service.record(
            s,
            workspace_id=ctx.workspace_id,
            contact_id=ctx.path_int("contact_id"),
            channel=ctx.body.channel,
            state=ConsentState(ctx.body.state),
            source=ConsentSource.agent,
            actor_id=ctx.principal.user_id,
            note=ctx.body.note,
        )
    return json_response(ConsentItem.model_validate(done.current), 201 if done.changed else 200)

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from server.api import Ctx, Page, Router, json_response
from server.audit import service as audit
from server.consent.tokens import Links
from server.errors import Problem
from server.messages import campaigns, idempotency, service
from server.messages.models import Message, MessageStatus
from server.messages.schemas import (
    CampaignIn,
    CampaignOut,
    MessageDetail,
    MessageEventOut,
    MessageIn,
    MessageOut,
    MessageQuery,
)
from server.messages.wake import wake_local
from server.pagination import PageQuery, decode_cursor, page_of
from server.templates import render

router = Router(tag="messages")

SCOPE = "messages"


@router.op(
    "POST",
    "/messages",
    body=MessageIn,
    response=MessageOut,
    status=202,
    role="agent",
    summary="Send a message now or at `send_at`",
)
async def create(ctx: Ctx[MessageIn]) -> Response:
    """Send a message now or at `send_at`; with `Idempotency-Key`, a retry replays the first answer."""
    key = idempotency.key_from(ctx.request.headers)
    digest = idempotency.request_hash(orjson.loads(await ctx.request.body())) if key else ""

    async def create_one(s: AsyncSession) -> tuple[Message, dict[str, Any]]:
        m = await service.create_message(
            s,
            workspace_id=ctx.workspace_id,
            user_id=ctx.principal.by_user,
            data=ctx.body.model_dump(),
            idempotency_key=key,
            templates_cache=ctx.services.caches.templates,
            links=Links(ctx.services.settings),
        )
        return m, MessageOut.model_validate(service.as_dict(m)).model_dump(mode="json")

    try:
        outcome = await idempotency.once(
            ctx.db, workspace_id=ctx.workspace_id, scope=SCOPE, key=key, digest=digest, create=create_one
        )
    except service.InvalidReference as exc:
        raise Problem(422, "The request is not valid.", errors=exc.errors) from None
    except render.TemplateInvalid as exc:
        raise Problem(422, "The subject or body is not a valid template.", errors=exc.errors) from None
    if outcome.value is not None and outcome.value.status == MessageStatus.queued:
        wake_local(ctx.services)
    return outcome.response()


@router.op("GET", "/messages", query=MessageQuery, response=Page[MessageOut])
async def list_messages(ctx: Ctx[None]) -> Page[MessageOut]:
    """Messages, newest first, filtered by status, contact, campaign or channel."""
    q: MessageQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_messages(
            s,
            workspace_id=ctx.workspace_id,
            status=q.status.value if q.status else None,
            contact_id=q.contact_id,
            campaign_id=q.campaign_id,
            channel=q.channel,
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, lambda m: MessageOut.model_validate(service.as_dict(m)), Page[MessageOut])


@router.op("GET", "/messages/{message_id}", response=MessageDetail, responses={404: "not found"})
async def get(ctx: Ctx[None]) -> MessageDetail:
    """One message with its status timeline (oldest first) under `events`."""
    async with ctx.db.transaction() as s:
        m = await service.get_message(s, workspace_id=ctx.workspace_id, message_id=ctx.path_int("message_id"))
        events = await service.timeline(s, message_id=m.id)
    return MessageDetail.model_validate(
        {**service.as_dict(m), "events": [MessageEventOut.model_validate(e) for e in events]}
    )


@router.op(
    "POST",
    "/messages/{message_id}/cancel",
    response=MessageOut,
    role="agent",
    responses={404: "not found", 409: "no longer cancelable"},
)
async def cancel(ctx: Ctx[None]) -> MessageOut:
    """Cancel a message while it is scheduled or queued."""
    try:
        async with ctx.db.transaction() as s:
            m = await service.cancel_message(
                s,
                workspace_id=ctx.workspace_id,
                message_id=ctx.path_int("message_id"),
                user_id=ctx.principal.by_user,
            )
    except service.NotCancelable as exc:
        raise Problem(
            409,
            f"The message is {exc.status}; only scheduled or queued messages can be canceled.",
            status_now=exc.status,
        ) from None
    return MessageOut.model_validate(service.as_dict(m))


@router.op("POST", "/campaigns", body=CampaignIn, response=CampaignOut, status=202, role="agent")
async def create_campaign(ctx: Ctx[CampaignIn]) -> Response:
    """Start a campaign: one message per contact of the audience, created in the background."""
    try:
        async with ctx.db.transaction() as s:
            c = await campaigns.create_campaign(
                s, workspace_id=ctx.workspace_id, user_id=ctx.principal.by_user, data=ctx.body.model_dump()
            )
            audit.record_for(
                s, ctx, action="campaign.started", target=f"campaign:{c.id}", details={"name": c.name}
            )
    except service.InvalidReference as exc:
        raise Problem(422, "The request is not valid.", errors=exc.errors) from None
    ctx.services.campaigns.start_expansion(c.id)
    return json_response(CampaignOut.model_validate(campaigns.as_dict(c)), 202)


@router.op(
    "POST",
    "/campaigns/{campaign_id}/cancel",
    response=CampaignOut,
    status=202,
    role="agent",
    responses={404: "not found", 409: "the campaign failed: nothing to cancel"},
)
async def cancel_campaign(ctx: Ctx[None]) -> Response:
    """Stop a campaign: its expansion ends after the batch in flight and its messages still
    scheduled or queued are canceled in the background (`message.status` events; those a worker
    already took go out). Canceling again changes nothing."""
    try:
        async with ctx.db.transaction() as s:
            c = await campaigns.cancel_campaign(
                s, workspace_id=ctx.workspace_id, campaign_id=ctx.path_int("campaign_id")
            )
            audit.record_for(
                s, ctx, action="campaign.canceled", target=f"campaign:{c.id}", details={"name": c.name}
            )
    except campaigns.CampaignNotCancelable as exc:
        raise Problem(
            409, f"The campaign {exc.status}; there is nothing to cancel.", status_now=exc.status
        ) from None
    ctx.services.campaigns.start_cancel(c.id)
    return json_response(CampaignOut.model_validate(campaigns.as_dict(c)), 202)


@router.op("GET", "/campaigns", query=PageQuery, response=Page[CampaignOut])
async def list_campaigns(ctx: Ctx[None]) -> Page[CampaignOut]:
    """Campaigns, newest first."""
    q: PageQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await campaigns.list_campaigns(
            s, workspace_id=ctx.workspace_id, before_id=decode_cursor(q.cursor), limit=q.limit + 1
        )
    return page_of(
        rows, q.limit, lambda c: CampaignOut.model_validate(campaigns.as_dict(c)), Page[CampaignOut]
    )


@router.op("GET", "/campaigns/{campaign_id}", response=CampaignOut, responses={404: "not found"})
async def get_campaign(ctx: Ctx[None]) -> CampaignOut:
    """A campaign and how far its expansion has come."""
    async with ctx.db.transaction() as s:
        c = await campaigns.get_campaign(
            s, workspace_id=ctx.workspace_id, campaign_id=ctx.path_int("campaign_id")
        )
    return CampaignOut.model_validate(campaigns.as_dict(c))

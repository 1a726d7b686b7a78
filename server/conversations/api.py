"""`/api/v1/conversations` (DESIGN §8): the shared inbox. Viewers read; agents write."""

from __future__ import annotations

import binascii
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from server.api import Ctx, Page, Router, json_response
from server.conversations import service
from server.conversations.schemas import (
    ConversationDetail,
    ConversationOut,
    ConversationPatch,
    ConversationQuery,
    InboundOut,
    OutboundOut,
    ReplyIn,
)
from server.conversations.webhooks import poke
from server.errors import Problem
from server.messages import idempotency
from server.messages import service as messages
from server.messages.models import Message, MessageStatus
from server.messages.schemas import MessageOut
from server.messages.wake import wake_local
from server.templates import render

router = Router(tag="conversations")

SCOPE = "conversation-reply"


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def _cursor(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return service.decode_cursor(raw)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Problem(
            422, "The cursor is not valid.", errors=[{"field": "query.cursor", "message": "invalid cursor"}]
        ) from None


@router.op("GET", "/conversations", query=ConversationQuery, response=Page[ConversationOut])
async def list_conversations(ctx: Ctx[None]) -> Response:
    """Conversations, newest activity first, with the caller's unread counts."""
    q: ConversationQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_conversations(
            s,
            workspace_id=ctx.workspace_id,
            user_id=ctx.principal.user_id,
            status=q.status,
            assignee=q.assignee,
            channel=q.channel,
            contact_id=q.contact_id,
            after=_cursor(q.cursor),
            limit=q.limit + 1,
        )
    shown = rows[: q.limit]
    items = [_dump(ConversationOut.model_validate(service.as_dict(c, n))) for c, n in shown]
    more = len(rows) > q.limit
    return json_response(
        {"items": items, "next_cursor": service.encode_cursor(shown[-1][0]) if more else None}
    )


@router.op(
    "GET", "/conversations/{conversation_id}", response=ConversationDetail, responses={404: "not found"}
)
async def get(ctx: Ctx[None]) -> Response:
    """One conversation with its timeline under `messages`: both directions, oldest first."""
    async with ctx.db.transaction() as s:
        conv = await service.get_conversation(
            s, workspace_id=ctx.workspace_id, conversation_id=ctx.path_int("conversation_id")
        )
        unread = await service.unread_for(s, conv, ctx.principal.user_id)
        timeline = await service.timeline(s, conv)
    items = [
        (InboundOut if item["direction"] == "inbound" else OutboundOut).model_validate(item)
        for item in timeline
    ]
    detail = ConversationDetail.model_validate({**service.as_dict(conv, unread), "messages": items})
    return json_response(_dump(detail))


@router.op(
    "PATCH",
    "/conversations/{conversation_id}",
    body=ConversationPatch,
    response=ConversationOut,
    role="agent",
    responses={404: "not found"},
)
async def patch(ctx: Ctx[ConversationPatch]) -> Response:
    """Change the status (`snoozed` needs `snooze_until`), the assignee (null: nobody) or the snooze."""
    try:
        async with ctx.db.transaction() as s:
            conv = await service.update_conversation(
                s,
                workspace_id=ctx.workspace_id,
                conversation_id=ctx.path_int("conversation_id"),
                changes=ctx.body.model_dump(exclude_unset=True),
            )
            unread = await service.unread_for(s, conv, ctx.principal.user_id)
    except service.AssigneeUnknown:
        raise Problem(
            422,
            "The request is not valid.",
            errors=[{"field": "assignee_id", "message": "no such active user in this workspace"}],
        ) from None
    poke(ctx.services, ctx.workspace_id)
    return json_response(_dump(ConversationOut.model_validate(service.as_dict(conv, unread))))


@router.op(
    "POST", "/conversations/{conversation_id}/read", status=204, role="viewer", responses={404: "not found"}
)
async def read(ctx: Ctx[None]) -> Response:
    """Mark everything received so far as read by the caller (unread counts are per agent)."""
    if ctx.principal.api_key_id is not None:
        raise Problem(403, "Unread counts are per agent; an API key has none to mark.")
    async with ctx.db.transaction() as s:
        await service.mark_read(
            s,
            workspace_id=ctx.workspace_id,
            conversation_id=ctx.path_int("conversation_id"),
            user_id=ctx.principal.user_id,
        )
    poke(ctx.services, ctx.workspace_id)
    return Response(status_code=204)


@router.op(
    "POST",
    "/conversations/{conversation_id}/messages",
    body=ReplyIn,
    response=MessageOut,
    status=202,
    role="agent",
    responses={404: "not found", 422: "invalid, or a free-form WhatsApp reply outside the 24-hour window"},
)
async def reply(ctx: Ctx[ReplyIn]) -> Response:
    """Reply to the customer through the dispatcher, from the number or address they wrote to.
    With `Idempotency-Key`, a retry replays the first answer."""
    conversation_id = ctx.path_int("conversation_id")
    key = idempotency.key_from(ctx.request.headers)
    digest = idempotency.request_hash(ctx.body.model_dump(mode="json")) if key else ""

    async def send_reply(s: AsyncSession) -> tuple[Message, dict[str, Any]]:
        m = await service.reply(
            s,
            workspace_id=ctx.workspace_id,
            conversation_id=conversation_id,
            user_id=ctx.principal.by_user,
            text=ctx.body.text,
            template_id=ctx.body.template_id,
            variables=ctx.body.variables,
            idempotency_key=None,
        )
        body = MessageOut.model_validate(messages.as_dict(m)).model_dump(mode="json")
        body["conversation_id"] = conversation_id
        return m, body

    try:
        outcome = await idempotency.once(
            ctx.db,
            workspace_id=ctx.workspace_id,
            scope=SCOPE,
            key=f"c{conversation_id}:{key}" if key is not None else None,  # a key per conversation
            digest=digest,
            create=send_reply,
        )
    except service.WindowClosed as exc:
        since = exc.last_inbound_at.isoformat() if exc.last_inbound_at else "never"
        if exc.template_id is None:
            error = {"field": "text", "message": "outside the 24-hour window: a template message is needed"}
        elif exc.needs == "content_sid":
            error = {
                "field": "template_id",
                "message": "outside the 24-hour window: the customer wrote through Twilio, which sends an"
                " approved template by its Content SID, and this template has no `whatsapp.content_sid`",
            }
        elif exc.needs == "name":
            error = {
                "field": "template_id",
                "message": "outside the 24-hour window: the customer wrote through the WhatsApp Cloud API,"
                " which sends an approved template by name, and this template has no `whatsapp.name`",
            }
        else:
            error = {
                "field": "template_id",
                "message": "outside the 24-hour window: this template names no WhatsApp-approved template"
                " (its `whatsapp` metadata)",
            }
        raise Problem(
            422,
            "WhatsApp only delivers free-form messages within 24 hours of the customer's last message"
            f" (last: {since}). Send a template that names a WhatsApp-approved template (`template_id`"
            " of a template with `whatsapp` metadata).",
            errors=[error],
        ) from None
    except messages.InvalidReference as exc:
        raise Problem(422, "The request is not valid.", errors=exc.errors) from None
    except render.TemplateInvalid as exc:
        raise Problem(422, "The template is not valid.", errors=exc.errors) from None
    if outcome.value is not None:
        if outcome.value.status == MessageStatus.queued:
            wake_local(ctx.services)
        poke(ctx.services, ctx.workspace_id)
    return outcome.response()

"""Creating messages: rendered and addressed at creation, queued for the dispatcher.

A message that cannot be sent as asked (no address for its channel, a template that does not fit
the data) is still created, as `failed` with the reason, so the sender sees why in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson
from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.cache import EntityCache
from server.consent.tokens import Links
from server.contacts import service as contacts
from server.db import UTCDateTime, dialect_of, utcnow
from server.errors import NotFound
from server.events.service import NewEvent, emit_many
from server.messages import counters
from server.messages.models import Message, MessageEvent, MessageStatus
from server.messages.status import MessageState, Transitions, event_data
from server.messages.wake import notify_dispatch
from server.middleware import request_id_var
from server.templates import render, whatsapp
from server.templates import service as templates

CANCELABLE = frozenset({MessageStatus.scheduled, MessageStatus.queued})


class InvalidReference(Exception):
    """The body names something that is not there: `errors` as for a 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.errors = [{"field": field, "message": message}]


class MessageNotFound(NotFound):
    what = "message"


class NotCancelable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def as_dict(m: Message) -> dict[str, Any]:
    """The public shape of a message."""
    return {
        "id": m.id,
        "contact_id": m.contact_id,
        "channel": m.channel,
        "to": m.to_address,
        "template_id": m.template_id,
        "campaign_id": m.campaign_id,
        "category": m.category,
        "subject": m.subject,
        "body": m.body,
        "variables": m.variables,
        "whatsapp_template": m.whatsapp_template,
        "status": m.status,
        "send_at": m.send_at,
        "provider": m.provider_kind,
        "provider_id": m.provider_id,
        "provider_message_id": m.provider_message_id,
        "attempts": m.attempts,
        "reason": m.reason,
        "idempotency_key": m.idempotency_key,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "sent_at": m.sent_at,
    }


def address_for(channel: str, contact: Any) -> tuple[str, str | None]:  # a Contact, or a row of its columns
    """(to, None), or ("", why not): email goes to the email, sms/whatsapp to the phone, chat (Slack) to
    the connection's channel."""
    if channel == "email":
        return (contact.email, None) if contact.email else ("", "contact has no email address")
    if channel in ("sms", "whatsapp"):
        return (contact.phone, None) if contact.phone else ("", "contact has no phone number")
    return "", None


def build_message(
    *,
    workspace_id: int,
    contact: Any,
    channel: str,
    compiled: render.CompiledMessage,
    variables: Mapping[str, Any],
    send_at: dt.datetime,
    now: dt.datetime,
    template_id: int | None = None,
    campaign_id: int | None = None,
    created_by: int | None = None,
    idempotency_key: str | None = None,
    category: str = "transactional",
    links: Links | None = None,
    approved: whatsapp.CompiledApproved | None = None,
) -> Message:
    """A new message for one contact, rendered; `failed` with the reason when it cannot go out.
    With `approved` (WhatsApp), it goes out as that approved template."""
    return Message(
        **message_values(
            workspace_id=workspace_id,
            contact=contact,
            channel=channel,
            rendered=rendered_for(
                channel,
                contact,
                compiled,
                variables,
                workspace_id=workspace_id,
                links=links,
                approved=approved,
            ),
            variables=variables,
            send_at=send_at,
            now=now,
            template_id=template_id,
            campaign_id=campaign_id,
            created_by=created_by,
            idempotency_key=idempotency_key,
            category=category,
        )
    )


# (to, subject, body, why it cannot go out, the WhatsApp approved template rendered or None)
Rendered = tuple[str, str, str, str | None, dict[str, Any] | None]


def rendered_for(
    channel: str,
    contact: Any,
    compiled: render.CompiledMessage,
    variables: Mapping[str, Any],
    *,
    workspace_id: int,
    links: Links | None = None,
    approved: whatsapp.CompiledApproved | None = None,
) -> Rendered:
    """The address and the rendered text of one contact's message, or the reason it fails.
    `links` makes the contact's `{{ unsubscribe_url }}` (empty without it)."""
    to, reason = address_for(channel, contact)
    subject = body = ""
    sent_as = None
    if reason is None:
        context = render.context_for(contact, variables)
        context["unsubscribe_url"] = links.url(workspace_id, contact.id, channel) if links else ""
        try:
            subject, body = compiled.render(context)
            sent_as = approved.render(context) if approved is not None else None
        except render.RenderError as exc:
            reason = exc.reason
    return to, subject, body, reason, sent_as


def message_values(
    *,
    workspace_id: int,
    contact: Any,
    channel: str,
    rendered: Rendered,
    variables: Mapping[str, Any],
    send_at: dt.datetime,
    now: dt.datetime,
    template_id: int | None = None,
    campaign_id: int | None = None,
    created_by: int | None = None,
    idempotency_key: str | None = None,
    category: str = "transactional",
) -> dict[str, Any]:
    """The columns of a new message (`build_message`, and campaigns' set-based inserts)."""
    to, subject, body, reason, sent_as = rendered
    if reason is not None:
        status = MessageStatus.failed
    elif send_at > now:
        status = MessageStatus.scheduled
    else:
        status = MessageStatus.queued
    return {
        "workspace_id": workspace_id,
        "contact_id": contact.id,
        "channel": channel,
        "to_address": to,
        "template_id": template_id,
        "campaign_id": campaign_id,
        "category": category,
        "subject": subject,
        "body": body,
        "variables": dict(variables),
        "whatsapp_template": sent_as,
        "send_at": send_at,
        "next_attempt_at": send_at,
        "status": status.value,
        "reason": reason,
        "attempts": 0,
        "idempotency_key": idempotency_key,
        "request_id": request_id_var.get(),  # the dispatcher logs its sends under the creating request's id
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
    }


async def record_created(session: AsyncSession, workspace_id: int, messages: Sequence[Message]) -> None:
    """Insert new messages with their first history row, counters and `message.created` events, and
    wake the dispatcher (at commit) if any is due now."""
    if not messages:
        return
    session.add_all(messages)
    await session.flush()
    await _created(session, workspace_id, messages)


_MESSAGE = cast(Table, Message.__table__)
_CREATED_COLUMNS = [
    _MESSAGE.c[n] for n in ("id", "contact_id", "channel", "status", "provider_kind", "reason", "created_at")
]


# PostgreSQL: the messages and their history rows in one statement, the values as arrays (compiled
# and prepared once, whatever the batch size; a 10,000-row VALUES list is not).
_INSERT_CREATED_PG = text(
    """
    WITH ins AS (
        INSERT INTO message (workspace_id, contact_id, channel, to_address, template_id, campaign_id,
            category, subject, body, variables, whatsapp_template, send_at, next_attempt_at, status,
            reason, attempts, idempotency_key, request_id, created_by, created_at, updated_at)
        SELECT :ws, v.contact_id, v.channel, v.to_address, :template_id, :campaign_id, :category,
            v.subject, v.body, CAST(v.variables AS jsonb), CAST(v.whatsapp_template AS jsonb),
            :send_at, :send_at, v.status, v.reason, 0, NULL, :request_id, :created_by, :now, :now
        FROM unnest(CAST(:contact_ids AS bigint[]), CAST(:channels AS varchar[]),
            CAST(:to_addresses AS varchar[]), CAST(:subjects AS text[]), CAST(:bodies AS text[]),
            CAST(:variables AS text[]), CAST(:whatsapp_templates AS text[]), CAST(:statuses AS varchar[]),
            CAST(:reasons AS text[]))
            AS v(contact_id, channel, to_address, subject, body, variables, whatsapp_template, status, reason)
        RETURNING id, contact_id, channel, status, provider_kind, reason, created_at
    ), history AS (
        INSERT INTO message_event (workspace_id, message_id, status, reason, at)
        SELECT :ws, id, status, reason, created_at FROM ins
    )
    SELECT * FROM ins
    """
)
_SHARED = ("template_id", "campaign_id", "category", "send_at", "request_id", "created_by", "created_at")


async def insert_created(session: AsyncSession, workspace_id: int, values: Sequence[dict[str, Any]]) -> int:
    """`record_created` for many messages given as column values (`message_values`, all with the
    same template, campaign, send time and creation time): set-based inserts, no ORM objects.
    Returns how many were created."""
    if not values:
        return 0
    first = values[0]
    if dialect_of(session) != "postgresql" or any(v[k] != first[k] for v in values for k in _SHARED):
        rows = (
            await session.execute(
                insert(_MESSAGE).returning(*_CREATED_COLUMNS, sort_by_parameter_order=True), values
            )
        ).all()
        await _created(session, workspace_id, rows)
        return len(rows)
    rows = (
        await session.execute(
            _INSERT_CREATED_PG.columns(created_at=UTCDateTime()),
            {
                "ws": workspace_id,
                "template_id": first["template_id"],
                "campaign_id": first["campaign_id"],
                "category": first["category"],
                "send_at": first["send_at"],
                "request_id": first["request_id"],
                "created_by": first["created_by"],
                "now": first["created_at"],
                "contact_ids": [v["contact_id"] for v in values],
                "channels": [v["channel"] for v in values],
                "to_addresses": [v["to_address"] for v in values],
                "subjects": [v["subject"] for v in values],
                "bodies": [v["body"] for v in values],
                "variables": [orjson.dumps(v["variables"]).decode() for v in values],
                "whatsapp_templates": [
                    None if v["whatsapp_template"] is None else orjson.dumps(v["whatsapp_template"]).decode()
                    for v in values
                ],
                "statuses": [v["status"] for v in values],
                "reasons": [v["reason"] for v in values],
            },
        )
    ).all()
    await _created(session, workspace_id, rows, history=False)
    return len(rows)


async def _created(
    session: AsyncSession, workspace_id: int, messages: Sequence[Any], *, history: bool = True
) -> None:
    if history:
        await session.execute(
            insert(MessageEvent),
            [
                {
                    "workspace_id": workspace_id,
                    "message_id": m.id,
                    "status": m.status,
                    "reason": m.reason,
                    "at": m.created_at,
                }
                for m in messages
            ],
        )
    deltas = counters.Deltas()
    for m in messages:
        deltas.created(workspace_id, m.created_at, m.channel, m.status)
    await counters.record(session, deltas)
    await emit_many(
        session,
        workspace_id,
        [NewEvent("message.created", event_data(m), contact_id=m.contact_id) for m in messages],
    )
    if any(m.status == MessageStatus.queued for m in messages):
        await notify_dispatch(session)


async def create_message(
    session: AsyncSession,
    *,
    workspace_id: int,
    user_id: int | None,
    data: Mapping[str, Any],
    idempotency_key: str | None = None,
    templates_cache: EntityCache | None = None,
    links: Links | None = None,
) -> Message:
    """`InvalidReference` when the contact or template is not in this workspace (or does not fit),
    `render.TemplateInvalid` for an inline subject or body that can never render.
    With `templates_cache`, a template is read and compiled once, not once per message."""
    try:
        contact = await contacts.get_contact(
            session, workspace_id=workspace_id, contact_id=data["contact_id"]
        )
    except contacts.ContactNotFound:
        raise InvalidReference("contact_id", "no such contact") from None
    channel = data["channel"]
    if data.get("template_id") is not None:
        template_id = data["template_id"]

        async def load() -> tuple[str, render.CompiledMessage, whatsapp.CompiledApproved | None]:
            try:
                tpl = await templates.get_template(
                    session, workspace_id=workspace_id, template_id=template_id
                )
            except templates.TemplateNotFound:
                raise InvalidReference("template_id", "no such template") from None
            return (
                tpl.channel,
                render.compile_message(tpl.subject, tpl.body),
                whatsapp.compile_approved(tpl.whatsapp),
            )

        if templates_cache is None:
            tpl_channel, compiled, approved = await load()
        else:
            cached = await templates_cache.get_or_load(
                workspace_id, template_id, load, version_of=lambda _: 0
            )
            assert cached is not None  # load() raises rather than return None
            tpl_channel, compiled, approved = cached
        if tpl_channel != channel:
            raise InvalidReference("template_id", f"the template is for {tpl_channel}, not {channel}")
    else:
        subject, body = data.get("subject") or "", data["body"]
        await render.validate(subject, body)
        compiled = render.compile_message(subject, body)
        approved = None
    now = utcnow()
    send_at = max(data.get("send_at") or now, now)
    message = build_message(
        workspace_id=workspace_id,
        contact=contact,
        channel=channel,
        compiled=compiled,
        variables=data.get("variables") or {},
        send_at=send_at,
        now=now,
        template_id=data.get("template_id"),
        created_by=user_id,
        idempotency_key=idempotency_key,
        category=data.get("category") or "transactional",
        links=links,
        approved=approved,
    )
    await record_created(session, workspace_id, [message])
    return message


async def get_message(
    session: AsyncSession, *, workspace_id: int, message_id: int, for_update: bool = False
) -> Message:
    stmt = select(Message).where(Message.id == message_id, Message.workspace_id == workspace_id)
    if for_update:
        stmt = stmt.with_for_update()
    m = (await session.execute(stmt)).scalar_one_or_none()
    if m is None:
        raise MessageNotFound(message_id)
    return m


async def timeline(session: AsyncSession, *, message_id: int) -> list[MessageEvent]:
    rows = await session.execute(
        select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
    )
    return list(rows.scalars())


async def list_messages(
    session: AsyncSession,
    *,
    workspace_id: int,
    status: str | None = None,
    contact_id: int | None = None,
    campaign_id: int | None = None,
    channel: str | None = None,
    before_id: int | None = None,
    limit: int,
) -> list[Message]:
    """Newest first."""
    stmt = select(Message).where(Message.workspace_id == workspace_id)
    if status:
        stmt = stmt.where(Message.status == status)
    if contact_id is not None:
        stmt = stmt.where(Message.contact_id == contact_id)
    if campaign_id is not None:
        stmt = stmt.where(Message.campaign_id == campaign_id)
    if channel:
        stmt = stmt.where(Message.channel == channel)
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)
    rows = await session.execute(stmt.order_by(Message.id.desc()).limit(limit))
    return list(rows.scalars())


async def cancel_message(
    session: AsyncSession, *, workspace_id: int, message_id: int, user_id: int | None
) -> Message:
    """Cancel a message the dispatcher has not taken yet; `NotCancelable` otherwise. The row lock
    orders this against a worker claiming the same message."""
    m = await get_message(session, workspace_id=workspace_id, message_id=message_id, for_update=True)
    if MessageStatus(m.status) not in CANCELABLE:
        raise NotCancelable(m.status)
    moves = Transitions(workspace_id)
    moves.move(MessageState.of(m), MessageStatus.canceled, reason="canceled", raw={"by": user_id})
    await emit_many(session, workspace_id, await moves.write(session))
    await session.refresh(m)  # written by a Core statement: read the row back
    return m

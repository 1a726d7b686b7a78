"""Conversations: storing inbound messages, the inbox's reads and writes, agent replies.

Every change writes its rows and its events (`conversation.*`, DESIGN §8) in one transaction.
Inbound messages take the workspace row lock first (the lock event ids take anyway): finding or
creating the sender's contact and conversation is then serial per workspace, so two webhooks from
one new customer make one contact and one conversation."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.models import User
from server.contacts.changes import get_contact, lock_workspace
from server.conversations import threading
from server.conversations.inbound import Inbound
from server.conversations.models import Conversation, ConversationRead, ConversationStatus, InboundMessage
from server.db import utcnow
from server.errors import NotFound
from server.events.service import NewEvent, emit_many
from server.messages import service as messages
from server.messages.models import Message, MessageStatus
from server.templates import render
from server.templates import service as templates

# WhatsApp's customer-service window: free-form messages only this long after the customer's last one.
WHATSAPP_WINDOW = dt.timedelta(hours=24)
PREVIEW_CHARS = 140
_NO_ADDRESS = ("contact has no email address", "contact has no phone number")


class ConversationNotFound(NotFound):
    what = "conversation"


class WindowClosed(Exception):
    """A free-form WhatsApp reply outside the 24-hour window: only a template may be sent."""

    def __init__(self, last_inbound_at: dt.datetime | None) -> None:
        super().__init__("whatsapp window closed")
        self.last_inbound_at = last_inbound_at


class AssigneeUnknown(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Received:
    stored: int
    duplicates: int


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_dict(c: Conversation, unread: int) -> dict[str, Any]:
    return {
        "id": c.id,
        "contact_id": c.contact_id,
        "channel": c.channel,
        "status": c.status,
        "assignee_id": c.assignee_id,
        "snooze_until": c.snooze_until,
        "unread": unread,
        "last_message_at": c.last_message_at,
        "created_at": c.created_at,
    }


def inbound_dict(m: InboundMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "direction": "inbound",
        "from": m.from_address,
        "to": m.to_address,
        "subject": m.subject,
        "text": m.text,
        "full_text": m.full_text,
        "html": m.html,
        "attachments": list(m.attachments or []),
        "provider_message_id": m.provider_message_id,
        "meta": dict(m.meta or {}),
        "received_at": m.received_at,
    }


def outbound_dict(m: Message, conversation_id: int) -> dict[str, Any]:
    return {
        **messages.as_dict(m),
        "conversation_id": conversation_id,
        "direction": "outbound",
        "from": m.from_address,
    }


def _event_data(c: Conversation) -> dict[str, Any]:
    return {
        "conversation_id": c.id,
        "contact_id": c.contact_id,
        "status": c.status,
        "assignee_id": c.assignee_id,
        "channel": c.channel,
    }


def updated_event(c: Conversation, **extra: Any) -> NewEvent:
    return NewEvent("conversation.updated", {**_event_data(c), **extra}, contact_id=c.contact_id)


def message_event(c: Conversation, message_id: int, direction: str, text: str) -> NewEvent:
    data = {
        "conversation_id": c.id,
        "contact_id": c.contact_id,
        "message_id": message_id,
        "direction": direction,
        "channel": c.channel,
        "preview": preview(text),
    }
    return NewEvent("conversation.message", data, contact_id=c.contact_id)


# --- inbound ---------------------------------------------------------------------------------


async def receive(
    session: AsyncSession, *, workspace_id: int, provider_id: int, secret: str, items: Sequence[Inbound]
) -> Received:
    """Store inbound messages once each (a provider's repeat changes nothing), threaded into their
    conversations, with their events."""
    if not items:
        return Received(0, 0)
    await lock_workspace(session, workspace_id)
    stored = duplicates = 0
    for msg in items:
        seen = (
            await session.execute(
                select(InboundMessage.id).where(
                    InboundMessage.provider_id == provider_id,
                    InboundMessage.provider_message_id == msg.provider_message_id,
                )
            )
        ).scalar_one_or_none()
        if seen is not None:
            duplicates += 1
            continue
        events: list[NewEvent] = []
        contact_id = await threading.find_contact(session, workspace_id=workspace_id, secret=secret, msg=msg)
        if contact_id is None:
            contact = await threading.new_contact(
                session, workspace_id=workspace_id, msg=msg, provider_id=provider_id
            )
            contact_id = contact.id
        conv, created = await threading.conversation_for(
            session, workspace_id=workspace_id, contact_id=contact_id, channel=msg.channel
        )
        now = utcnow()
        row = InboundMessage(
            workspace_id=workspace_id,
            conversation_id=conv.id,
            provider_id=provider_id,
            provider_message_id=msg.provider_message_id,
            from_address=msg.sender[:320],
            to_address=msg.recipient[:320],
            subject=msg.subject,
            text=msg.text,
            full_text=msg.full_text or msg.text,
            html=msg.html,
            attachments=[a.as_dict() for a in msg.attachments],
            meta={**msg.meta, **({"sender_name": msg.sender_name} if msg.sender_name else {})},
            received_at=msg.received_at or now,
        )
        session.add(row)
        await session.flush()
        woke = conv.status in (ConversationStatus.resolved, ConversationStatus.snoozed)
        if woke:
            conv.status = ConversationStatus.open.value
            conv.snooze_until = None
        conv.last_message_at = max(conv.last_message_at, now)
        conv.last_inbound_at = max(conv.last_inbound_at or now, now)
        conv.updated_at = now
        if created:
            events.append(NewEvent("conversation.created", _event_data(conv), contact_id=contact_id))
        elif woke:
            events.append(updated_event(conv))
        events.append(message_event(conv, row.id, "inbound", msg.preview()))
        await emit_many(session, workspace_id, events)
        stored += 1
    return Received(stored, duplicates)


# --- reading ---------------------------------------------------------------------------------


def _unread(user_id: int | None) -> Any:
    """Inbound messages of a conversation after the caller's read marker, as a scalar subquery."""
    marker = (
        select(ConversationRead.last_read_inbound_id)
        .where(ConversationRead.conversation_id == Conversation.id, ConversationRead.user_id == user_id)
        .correlate(Conversation)
        .scalar_subquery()
    )
    return (
        select(func.count(InboundMessage.id))
        .where(
            InboundMessage.conversation_id == Conversation.id, InboundMessage.id > func.coalesce(marker, 0)
        )
        .correlate(Conversation)
        .scalar_subquery()
    )


def encode_cursor(c: Conversation) -> str:
    raw = f"act:{c.last_message_at.isoformat()}|{c.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """`ValueError` when it is not one of ours."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    prefix, _, rest = raw.partition(":")
    at, _, ident = rest.partition("|")
    if prefix != "act":
        raise ValueError(cursor)
    when = dt.datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError(cursor)
    return when, int(ident)


async def list_conversations(
    session: AsyncSession,
    *,
    workspace_id: int,
    user_id: int | None,
    status: str | None = None,
    assignee: str | None = None,
    channel: str | None = None,
    contact_id: int | None = None,
    after: tuple[dt.datetime, int] | None = None,
    limit: int,
) -> list[tuple[Conversation, int]]:
    """Newest activity first, with the caller's unread count. `assignee`: me | none | a user id."""
    stmt = select(Conversation, _unread(user_id)).where(Conversation.workspace_id == workspace_id)
    if status:
        stmt = stmt.where(Conversation.status == status)
    if assignee == "me":
        stmt = stmt.where(Conversation.assignee_id == user_id)
    elif assignee == "none":
        stmt = stmt.where(Conversation.assignee_id.is_(None))
    elif assignee:
        stmt = stmt.where(Conversation.assignee_id == int(assignee))
    if channel:
        stmt = stmt.where(Conversation.channel == channel)
    if contact_id is not None:
        stmt = stmt.where(Conversation.contact_id == contact_id)
    if after is not None:
        at, ident = after
        stmt = stmt.where(
            or_(
                Conversation.last_message_at < at,
                and_(Conversation.last_message_at == at, Conversation.id < ident),
            )
        )
    stmt = stmt.order_by(Conversation.last_message_at.desc(), Conversation.id.desc()).limit(limit)
    return [(c, int(n or 0)) for c, n in (await session.execute(stmt)).all()]


async def get_conversation(
    session: AsyncSession, *, workspace_id: int, conversation_id: int, for_update: bool = False
) -> Conversation:
    stmt = select(Conversation).where(
        Conversation.id == conversation_id, Conversation.workspace_id == workspace_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    conv = (await session.execute(stmt)).scalar_one_or_none()
    if conv is None:
        raise ConversationNotFound(conversation_id)
    return conv


async def unread_for(session: AsyncSession, conv: Conversation, user_id: int | None) -> int:
    stmt = select(_unread(user_id)).select_from(Conversation).where(Conversation.id == conv.id)
    return int((await session.execute(stmt)).scalar_one() or 0)


async def timeline(session: AsyncSession, conv: Conversation) -> list[dict[str, Any]]:
    """Both directions, oldest first. Outbound: the agent replies linked to the conversation and
    every other message to the same contact on the same channel (campaigns, API sends)."""
    inbound = (
        await session.execute(
            select(InboundMessage)
            .where(InboundMessage.conversation_id == conv.id)
            .order_by(InboundMessage.id)
        )
    ).scalars()
    outbound = (
        await session.execute(
            select(Message)
            .where(
                Message.workspace_id == conv.workspace_id,
                or_(
                    Message.conversation_id == conv.id,
                    and_(
                        Message.conversation_id.is_(None),
                        Message.contact_id == conv.contact_id,
                        Message.channel == conv.channel,
                    ),
                ),
            )
            .order_by(Message.id)
        )
    ).scalars()
    items = [(m.received_at, 0, m.id, inbound_dict(m)) for m in inbound]
    items += [(m.created_at, 1, m.id, outbound_dict(m, conv.id)) for m in outbound]
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in items]


async def last_inbound(session: AsyncSession, conv: Conversation) -> InboundMessage | None:
    return (
        await session.execute(
            select(InboundMessage)
            .where(InboundMessage.conversation_id == conv.id)
            .order_by(InboundMessage.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


# --- writing ---------------------------------------------------------------------------------


async def update_conversation(
    session: AsyncSession,
    *,
    workspace_id: int,
    conversation_id: int,
    changes: dict[str, Any],
) -> Conversation:
    """Status, assignee and snooze; `conversation.updated` when anything changed. Snoozing needs a
    time; any other status clears it. An assignee is an active user of the workspace."""
    conv = await get_conversation(
        session, workspace_id=workspace_id, conversation_id=conversation_id, for_update=True
    )
    before = (conv.status, conv.assignee_id, conv.snooze_until)
    if "assignee_id" in changes:
        assignee = changes["assignee_id"]
        if assignee is not None:
            found = await session.execute(
                select(User.id).where(User.id == assignee, User.workspace_id == workspace_id, User.is_active)
            )
            if found.scalar_one_or_none() is None:
                raise AssigneeUnknown(assignee)
        conv.assignee_id = assignee
    if "snooze_until" in changes:
        conv.snooze_until = changes["snooze_until"]
        if conv.snooze_until is not None and "status" not in changes:
            conv.status = ConversationStatus.snoozed.value
    if "status" in changes:
        conv.status = changes["status"]
        if conv.status != ConversationStatus.snoozed:
            conv.snooze_until = None
    if (conv.status, conv.assignee_id, conv.snooze_until) != before:
        conv.updated_at = utcnow()
        await session.flush()
        await emit_many(session, workspace_id, [updated_event(conv)])
    return conv


async def mark_read(session: AsyncSession, *, workspace_id: int, conversation_id: int, user_id: int) -> None:
    """Everything received so far is read by `user_id` (others' counts do not move)."""
    conv = await get_conversation(session, workspace_id=workspace_id, conversation_id=conversation_id)
    newest = (
        await session.execute(
            select(func.max(InboundMessage.id)).where(InboundMessage.conversation_id == conv.id)
        )
    ).scalar_one_or_none() or 0
    marker = await session.get(ConversationRead, (conv.id, user_id), with_for_update=True)
    if marker is None:
        session.add(
            ConversationRead(
                conversation_id=conv.id,
                user_id=user_id,
                workspace_id=workspace_id,
                last_read_inbound_id=newest,
            )
        )
    elif marker.last_read_inbound_id >= newest:
        return
    else:
        marker.last_read_inbound_id = newest
        marker.read_at = utcnow()
    await session.flush()
    await emit_many(session, workspace_id, [updated_event(conv, read_by=user_id)])


def _reply_subject(subject: str) -> str:
    subject = subject.strip()
    return subject if subject.lower().startswith("re:") else (f"Re: {subject}" if subject else "")


async def reply(
    session: AsyncSession,
    *,
    workspace_id: int,
    conversation_id: int,
    user_id: int | None,
    text: str | None,
    template_id: int | None,
    variables: dict[str, Any],
    idempotency_key: str | None,
) -> Message:
    """An agent's reply: a message to the address the customer wrote from, sent from the one they
    wrote to, queued for the dispatcher. `WindowClosed` for free-form WhatsApp outside 24 h."""
    conv = await get_conversation(
        session, workspace_id=workspace_id, conversation_id=conversation_id, for_update=True
    )
    now = utcnow()
    if (
        conv.channel == "whatsapp"
        and template_id is None
        and (conv.last_inbound_at is None or now - conv.last_inbound_at > WHATSAPP_WINDOW)
    ):
        raise WindowClosed(conv.last_inbound_at)
    contact = await get_contact(session, workspace_id=workspace_id, contact_id=conv.contact_id)
    last = await last_inbound(session, conv)
    if template_id is not None:
        try:
            tpl = await templates.get_template(session, workspace_id=workspace_id, template_id=template_id)
        except templates.TemplateNotFound:
            raise messages.InvalidReference("template_id", "no such template") from None
        if tpl.channel != conv.channel:
            raise messages.InvalidReference(
                "template_id", f"the template is for {tpl.channel}, not {conv.channel}"
            )
        compiled = render.compile_message(tpl.subject, tpl.body)
    else:
        compiled = render.compile_message("", "")
    m = messages.build_message(
        workspace_id=workspace_id,
        contact=contact,
        channel=conv.channel,
        compiled=compiled,
        variables=variables,
        send_at=now,
        now=now,
        template_id=template_id,
        created_by=user_id,
        idempotency_key=idempotency_key,
    )
    if last is not None:
        # Back to where the customer wrote from (perhaps an extra address), from where they wrote to.
        m.to_address = last.from_address
        m.from_address = last.to_address or None
        if m.from_address and m.from_address.startswith("reply+"):
            m.from_address = None
        if m.reason in _NO_ADDRESS:
            m.status, m.reason = MessageStatus.queued.value, None
            if template_id is not None:
                try:
                    m.subject, m.body = compiled.render(render.context_for(contact, variables))
                except render.RenderError as exc:
                    m.status, m.reason = MessageStatus.failed.value, exc.reason
    if text is not None and m.reason is None:
        m.subject = (
            _reply_subject(last.subject if last is not None else "") if conv.channel == "email" else ""
        )
        m.body = text
    m.conversation_id = conv.id
    await messages.record_created(session, workspace_id, [m])
    conv.last_message_at = max(conv.last_message_at, now)
    conv.updated_at = now
    await emit_many(session, workspace_id, [message_event(conv, m.id, "outbound", m.body)])
    return m


async def exists(session: AsyncSession, *, workspace_id: int, conversation_id: int) -> bool:
    found = await session.execute(
        select(Conversation.id).where(
            Conversation.id == conversation_id, Conversation.workspace_id == workspace_id
        )
    )
    return found.scalar_one_or_none() is not None

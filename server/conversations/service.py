"""Conversations: storing inbound messages, the inbox's reads and writes, agent replies.

Every change writes its rows and its events (`conversation.*`, DESIGN §8) in one transaction.
Inbound messages are stored a batch at a time (`receive`, inside the webhook group commit of
`server/webhooks/ingest.py`) with set-based statements; making a contact for an unknown sender
takes the workspace row lock first (the lock event ids take anyway), so two webhooks from one new
customer make one contact, and one conversation (unique per contact and channel)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import BigInteger, String, Table, and_, case, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.models import User
from server.contacts.changes import get_contact, lock_workspace
from server.contacts.models import Contact
from server.conversations import threading
from server.conversations.inbound import Inbound
from server.conversations.models import Conversation, ConversationRead, ConversationStatus, InboundMessage
from server.db import UTCDateTime, one_of, utcnow
from server.errors import NotFound
from server.events.service import NewEvent, emit_many
from server.messages import service as messages
from server.messages.models import Message, MessageStatus
from server.providers.models import Provider
from server.templates import render, whatsapp
from server.templates import service as templates
from server.webhooks.service import insert_for

# WhatsApp's customer-service window: free-form messages only this long after the customer's last one.
WHATSAPP_WINDOW = dt.timedelta(hours=24)
PREVIEW_CHARS = 140
# A reply on these goes through the connection the customer wrote to (it owns the number).
PINNED_CHANNELS = frozenset({"sms", "whatsapp"})
_NO_ADDRESS = ("contact has no email address", "contact has no phone number")


class ConversationNotFound(NotFound):
    what = "conversation"


class WindowClosed(Exception):
    """A WhatsApp reply outside the 24-hour window that is not an approved WhatsApp template:
    free-form text, or a template without `whatsapp` metadata (`template_id` set), or without the
    part the customer's connection sends it by (`needs`: `content_sid` for Twilio, `name` for the
    Cloud API)."""

    def __init__(
        self, last_inbound_at: dt.datetime | None, template_id: int | None = None, needs: str | None = None
    ) -> None:
        super().__init__("whatsapp window closed")
        self.last_inbound_at = last_inbound_at
        self.template_id = template_id
        self.needs = needs


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


class ConversationView(Protocol):
    """What a conversation's events carry: a `Conversation` row, or inbound threading's `Thread`."""

    @property
    def id(self) -> int: ...
    @property
    def contact_id(self) -> int: ...
    @property
    def channel(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def assignee_id(self) -> int | None: ...


def _event_data(c: ConversationView) -> dict[str, Any]:
    return {
        "conversation_id": c.id,
        "contact_id": c.contact_id,
        "status": c.status,
        "assignee_id": c.assignee_id,
        "channel": c.channel,
    }


def updated_event(c: ConversationView, **extra: Any) -> NewEvent:
    return NewEvent("conversation.updated", {**_event_data(c), **extra}, contact_id=c.contact_id)


def message_event(c: ConversationView, message_id: int, direction: str, text: str) -> NewEvent:
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


_INBOUND = cast(Table, InboundMessage.__table__)
_CONVERSATION = cast(Table, Conversation.__table__)
_ASLEEP = (ConversationStatus.resolved.value, ConversationStatus.snoozed.value)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One delivery's inbound messages, as a provider connection handed them over (verified)."""

    workspace_id: int
    provider_id: int
    items: Sequence[Inbound]


# Called for each newly stored inbound message, in the same transaction, with its workspace, its
# conversation and its id (SMS/WhatsApp keywords: server/consent/keywords.py).
OnStored = Callable[[AsyncSession, int, "ConversationView", int, Inbound], Awaitable[object]]


async def receive(
    session: AsyncSession,
    *,
    secret: str,
    arrivals: Sequence[Arrival],
    lock_order: Collection[int] = (),
    on_stored: OnStored | None = None,
) -> tuple[list[Received], dict[int, list[NewEvent]]]:
    """Store inbound messages once each (a provider's repeat changes nothing), threaded into their
    conversations; returns each arrival's counts and the events to emit, by workspace (the caller
    emits them before commit: `server/webhooks/ingest.py` does, once per workspace and batch).

    A fixed number of statements per workspace whatever the number of messages. An unknown sender
    becomes a contact under the workspace row lock (the lock event ids take anyway), taken only
    then, so one new customer writing twice at once makes one contact; `lock_order` is every
    workspace this transaction emits events to, all locked then, in id order (no deadlock with a
    transaction that emits in id order)."""
    by_workspace: dict[int, list[tuple[int, int, Inbound]]] = {}
    for n, arrival in enumerate(arrivals):
        for msg in arrival.items:
            by_workspace.setdefault(arrival.workspace_id, []).append((n, arrival.provider_id, msg))
    stored = [0] * len(arrivals)
    events: dict[int, list[NewEvent]] = {}
    fresh: dict[int, list[tuple[int, int, Inbound]]] = {}
    for workspace_id in sorted(by_workspace):
        fresh[workspace_id] = await _not_seen(session, by_workspace[workspace_id])
    found = {
        ws: await threading.find_contacts(
            session, workspace_id=ws, secret=secret, items=[msg for _, _, msg in entries]
        )
        for ws, entries in fresh.items()
    }
    if any(len(found[ws]) < len(entries) for ws, entries in fresh.items()):
        for workspace_id in sorted({*lock_order, *fresh}):
            await lock_workspace(session, workspace_id)
    for workspace_id, entries in fresh.items():
        events[workspace_id] = await _store(
            session, workspace_id, entries, found[workspace_id], stored=stored, on_stored=on_stored
        )
    received = [Received(stored[n], len(a.items) - stored[n]) for n, a in enumerate(arrivals)]
    return received, {ws: e for ws, e in events.items() if e}


async def _not_seen(
    session: AsyncSession, entries: list[tuple[int, int, Inbound]]
) -> list[tuple[int, int, Inbound]]:
    """The entries whose (provider, provider message id) is neither stored already nor earlier in
    the batch: a repeat touches no contact or conversation. (A repeat racing its first delivery in
    another transaction is still caught by the insert's conflict.)"""
    if not entries:
        return []
    conn = await session.connection()
    rows = await conn.execute(
        select(_INBOUND.c.provider_id, _INBOUND.c.provider_message_id).where(
            one_of(
                conn.dialect.name, _INBOUND.c.provider_id, sorted({p for _, p, _ in entries}), BigInteger()
            ),
            one_of(
                conn.dialect.name,
                _INBOUND.c.provider_message_id,
                sorted({m.provider_message_id for _, _, m in entries}),
                String(),
            ),
        )
    )
    seen = {(p, m) for p, m in rows.all()}
    out = []
    for entry in entries:
        key = (entry[1], entry[2].provider_message_id)
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


async def _store(
    session: AsyncSession,
    workspace_id: int,
    entries: list[tuple[int, int, Inbound]],
    found: dict[int, int],
    *,
    stored: list[int],
    on_stored: OnStored | None = None,
) -> list[NewEvent]:
    """One workspace's new inbound messages: contacts made for unknown senders, conversations
    made or woken, the messages inserted (counted in `stored`, by arrival); returns the events,
    in arrival order."""
    if not entries:
        return []
    events: list[NewEvent] = []
    items = [msg for _, _, msg in entries]
    unknown = [i for i in range(len(entries)) if i not in found]
    if unknown:
        # Under the workspace lock now: a sender made a contact meanwhile is found, not made twice.
        again = await threading.contacts_by_address(
            session, workspace_id, {threading.address_of(items[i]) for i in unknown}
        )
        senders = [(items[i], entries[i][1]) for i in unknown if threading.address_of(items[i]) not in again]
        made, contact_events = await threading.new_contacts(
            session, workspace_id=workspace_id, senders=senders
        )
        events += contact_events
        by_address = {**again, **made}
        found = {**found, **{i: by_address[threading.address_of(items[i])] for i in unknown}}
    threads, created = await threading.conversations_for(
        session, workspace_id=workspace_id, pairs={(found[i], m.channel) for i, m in enumerate(items)}
    )
    now = utcnow()
    conn = await session.connection()
    rows = [
        {
            "workspace_id": workspace_id,
            "conversation_id": threads[(found[i], msg.channel)].id,
            "provider_id": provider_id,
            "provider_message_id": msg.provider_message_id,
            "from_address": msg.sender[:320],
            "to_address": msg.recipient[:320],
            "subject": msg.subject,
            "text": msg.text,
            "full_text": msg.full_text or msg.text,
            "html": msg.html,
            "attachments": [a.as_dict() for a in msg.attachments],
            "meta": {**msg.meta, **({"sender_name": msg.sender_name} if msg.sender_name else {})},
            "received_at": msg.received_at or now,
        }
        for i, (_, provider_id, msg) in enumerate(entries)
    ]
    inserted = await conn.execute(
        insert_for(conn, _INBOUND)
        .on_conflict_do_nothing(index_elements=["provider_id", "provider_message_id"])
        .returning(_INBOUND.c.id, _INBOUND.c.provider_id, _INBOUND.c.provider_message_id),
        rows,
    )
    ids = {(p, m): row_id for row_id, p, m in inserted.all()}
    landed = [
        (i, ids[key])
        for i, (_, provider_id, msg) in enumerate(entries)
        if (key := (provider_id, msg.provider_message_id)) in ids
    ]
    touched = {
        threads[(found[i], items[i].channel)].id: threads[(found[i], items[i].channel)] for i, _ in landed
    }
    woken = sorted(t.id for t in touched.values() if t.status in _ASLEEP)
    if touched:
        later = literal(now, UTCDateTime())
        await conn.execute(
            update(_CONVERSATION)
            .where(one_of(conn.dialect.name, _CONVERSATION.c.id, sorted(touched), BigInteger()))
            .values(
                last_message_at=case(
                    (_CONVERSATION.c.last_message_at > later, _CONVERSATION.c.last_message_at), else_=later
                ),
                last_inbound_at=case(
                    (_CONVERSATION.c.last_inbound_at > later, _CONVERSATION.c.last_inbound_at), else_=later
                ),
                updated_at=now,
            )
        )
    if woken:
        await conn.execute(
            update(_CONVERSATION)
            .where(one_of(conn.dialect.name, _CONVERSATION.c.id, woken, BigInteger()))
            .values(status=ConversationStatus.open.value, snooze_until=None)
        )
    announced: set[int] = set()
    for i, message_id in landed:
        thread = threads[(found[i], items[i].channel)]
        if thread.id not in announced:
            announced.add(thread.id)
            if thread.id in created:
                events.append(
                    NewEvent("conversation.created", _event_data(thread), contact_id=thread.contact_id)
                )
            elif thread.status in _ASLEEP:
                thread.status = ConversationStatus.open.value
                events.append(updated_event(thread))
        events.append(message_event(thread, message_id, "inbound", items[i].preview()))
        stored[entries[i][0]] += 1
    if on_stored is not None:
        for i, message_id in landed:
            await on_stored(
                session, workspace_id, threads[(found[i], items[i].channel)], message_id, items[i]
            )
    return events


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
    wrote to (on sms and whatsapp through the connection it arrived on), queued for the
    dispatcher. On WhatsApp a template with `whatsapp` metadata goes out as that approved
    template when that connection can send it (Twilio by `content_sid`, the Cloud API by `name`);
    outside the 24-hour window nothing else may (`WindowClosed`)."""
    conv = await get_conversation(
        session, workspace_id=workspace_id, conversation_id=conversation_id, for_update=True
    )
    now = utcnow()
    window_closed = conv.channel == "whatsapp" and (
        conv.last_inbound_at is None or now - conv.last_inbound_at > WHATSAPP_WINDOW
    )
    if window_closed and template_id is None:
        raise WindowClosed(conv.last_inbound_at)
    approved = None
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
        approved = whatsapp.compile_approved(tpl.whatsapp) if conv.channel == "whatsapp" else None
        if window_closed and approved is None:
            raise WindowClosed(conv.last_inbound_at, template_id)
    else:
        compiled = render.compile_message("", "")
    last = await last_inbound(session, conv)
    via = last.provider_id if last is not None and conv.channel in PINNED_CHANNELS else None
    if approved is not None and via is not None:
        kind = await session.scalar(
            select(Provider.kind).where(Provider.id == via, Provider.workspace_id == workspace_id)
        )
        if kind is not None and not approved.sends_with(kind):
            # The customer's connection cannot send this approved template: inside the window
            # the body goes out as free-form text, outside it nothing may.
            if window_closed:
                raise WindowClosed(
                    conv.last_inbound_at, template_id, "content_sid" if kind == "twilio" else "name"
                )
            approved = None
    contact = await get_contact(session, workspace_id=workspace_id, contact_id=conv.contact_id)
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
        approved=approved,
    )
    if last is not None:
        # Back to where the customer wrote from (perhaps an extra address), from where they wrote to.
        m.to_address = last.from_address
        m.from_address = last.to_address or None
        if m.from_address and m.from_address.startswith("reply+"):
            m.from_address = None
        m.via_provider_id = via
        if m.reason in _NO_ADDRESS:
            m.status, m.reason = MessageStatus.queued.value, None
            if template_id is not None:
                context = render.context_for(contact, variables)
                try:
                    m.subject, m.body = compiled.render(context)
                    m.whatsapp_template = approved.render(context) if approved is not None else None
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


# --- reads for the inbox page ------------------------------------------------------------------


async def contacts_by_id(session: AsyncSession, workspace_id: int, ids: set[int]) -> dict[int, Contact]:
    if not ids:
        return {}
    rows = await session.execute(
        select(Contact).where(Contact.workspace_id == workspace_id, Contact.id.in_(ids))
    )
    return {c.id: c for c in rows.scalars()}


async def last_inbound_previews(session: AsyncSession, ids: list[int], limit: int = 90) -> dict[int, str]:
    """The customer's last words in each of these conversations."""
    if not ids:
        return {}
    newest = (
        select(func.max(InboundMessage.id).label("id"))
        .where(InboundMessage.conversation_id.in_(ids))
        .group_by(InboundMessage.conversation_id)
        .subquery()
    )
    rows = await session.execute(
        select(InboundMessage.conversation_id, InboundMessage.text).join(
            newest, InboundMessage.id == newest.c.id
        )
    )
    return {cid: preview(text, limit) for cid, text in rows.all()}


async def outbound_authors(session: AsyncSession, message_ids: list[int]) -> dict[int, int | None]:
    """Who (user id, or None for the system/an API key) created each outbound message."""
    if not message_ids:
        return {}
    rows = await session.execute(select(Message.id, Message.created_by).where(Message.id.in_(message_ids)))
    return {mid: by for mid, by in rows.all()}

"""Which conversation an inbound message belongs to (DESIGN §8).

A conversation is one contact on one channel, so threading is finding the contact:
* SMS and WhatsApp: the sender's E.164 number (a contact's phone, or one of its extra phones).
* Email, in this order: a signed reply address (`reply+<token>@<inbound domain>`, put in `Reply-To`
  of our outbound email; it names our message, whose contact wrote to us even from another address
  or a client that drops `In-Reply-To`), then `In-Reply-To`/`References` against our messages'
  Message-IDs and earlier inbound ones, then the sender's address (primary or extra).
* Nobody: a new contact, recorded through the contact-change recorder with an audit row saying
  where it came from.
Replies to one campaign from different recipients land in as many conversations: each recipient
is their own contact."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts import changes as recorder
from server.contacts.models import Contact, ContactIdentity
from server.conversations.inbound import Inbound
from server.conversations.models import Conversation, ConversationStatus, InboundMessage
from server.db import utcnow
from server.messages.models import Message

# Our outbound Message-IDs: `<sb-<workspace>-<message>@domain>` (see the adapters' `message_id_for`).
OUR_MESSAGE_ID = re.compile(r"^sb-(\d{1,18})-(\d{1,18})@")
_SIG_HEX = 20  # 80 bits of HMAC: unguessable, and short enough for an address's local part


def _sig(secret: str, workspace_id: int, message_id: int) -> str:
    mac = hmac.new(secret.encode(), f"reply-to:{workspace_id}:{message_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:_SIG_HEX]


def reply_token(secret: str, workspace_id: int, message_id: int) -> str:
    """The token in `reply+<token>@<inbound domain>` for one outbound message."""
    return f"{message_id}.{_sig(secret, workspace_id, message_id)}"


def reply_address(secret: str, workspace_id: int, message_id: int, domain: str) -> str:
    return f"reply+{reply_token(secret, workspace_id, message_id)}@{domain}"


def message_of_token(secret: str, workspace_id: int, token: str) -> int | None:
    """The message id a reply token names, if it is ours and for this workspace."""
    raw_id, _, sig = token.partition(".")
    if not (raw_id.isdigit() and len(raw_id) <= 18 and sig):
        return None
    message_id = int(raw_id)
    if not hmac.compare_digest(_sig(secret, workspace_id, message_id), sig.lower()):
        return None
    return message_id


async def _contact_of_message(session: AsyncSession, workspace_id: int, message_ids: list[int]) -> int | None:
    if not message_ids:
        return None
    rows = await session.execute(
        select(Message.id, Message.contact_id).where(
            Message.workspace_id == workspace_id, Message.id.in_(message_ids), Message.contact_id.is_not(None)
        )
    )
    by_id = {mid: cid for mid, cid in rows.all()}
    return next((by_id[m] for m in message_ids if m in by_id), None)


async def _by_references(session: AsyncSession, workspace_id: int, refs: tuple[str, ...]) -> int | None:
    """The contact of the newest referenced message we know: ours (by our Message-ID form or a
    provider's id that is one) or an earlier inbound message."""
    if not refs:
        return None
    ours = []
    for ref in refs:
        if (m := OUR_MESSAGE_ID.match(ref)) and int(m.group(1)) == workspace_id:
            ours.append(int(m.group(2)))
    found = await _contact_of_message(session, workspace_id, ours)
    if found is not None:
        return found
    variants = [*refs, *(f"<{r}>" for r in refs)]
    row = (
        await session.execute(
            select(Message.contact_id)
            .where(
                Message.workspace_id == workspace_id,
                Message.channel == "email",
                Message.provider_message_id.in_(variants),
                Message.contact_id.is_not(None),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is not None:
        return int(row)
    conv = (
        await session.execute(
            select(Conversation.contact_id)
            .join(InboundMessage, InboundMessage.conversation_id == Conversation.id)
            .where(InboundMessage.workspace_id == workspace_id, InboundMessage.provider_message_id.in_(refs))
            .order_by(InboundMessage.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return int(conv) if conv is not None else None


async def contact_by_address(session: AsyncSession, workspace_id: int, kind: str, value: str) -> int | None:
    """The contact whose primary or extra `kind` (email|phone) is `value` (lower-cased email, E.164)."""
    column = func.lower(Contact.email) if kind == "email" else Contact.phone
    primary = (
        await session.execute(
            select(Contact.id)
            .where(Contact.workspace_id == workspace_id, column == value)
            .order_by(Contact.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if primary is not None:
        return int(primary)
    extra = (
        await session.execute(
            select(ContactIdentity.contact_id).where(
                ContactIdentity.workspace_id == workspace_id,
                ContactIdentity.kind == kind,
                ContactIdentity.value == value,
            )
        )
    ).scalar_one_or_none()
    return int(extra) if extra is not None else None


async def find_contact(session: AsyncSession, *, workspace_id: int, secret: str, msg: Inbound) -> int | None:
    if msg.channel == "email":
        by_token = [
            mid for t in msg.reply_tokens if (mid := message_of_token(secret, workspace_id, t)) is not None
        ]
        found = await _contact_of_message(session, workspace_id, by_token)
        if found is None:
            found = await _by_references(session, workspace_id, msg.references)
        if found is None:
            found = await contact_by_address(session, workspace_id, "email", msg.sender)
        return found
    return await contact_by_address(session, workspace_id, "phone", msg.sender)


async def new_contact(session: AsyncSession, *, workspace_id: int, msg: Inbound, provider_id: int) -> Contact:
    """A contact for an unknown sender, recorded as any new contact is (version, audit, event),
    with one more audit row, `source`, saying it came from an inbound message."""
    now = utcnow()
    contact = Contact(
        workspace_id=workspace_id,
        name=msg.sender_name[:300],
        email=msg.sender if msg.channel == "email" else None,
        phone=msg.sender if msg.channel != "email" else None,
        attributes={},
        tags=[],
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(contact)
    await recorder.flush_contact(session)
    change = recorder.created(contact, by=None)
    source = {"inbound": msg.channel, "provider_id": provider_id, "from": msg.sender}
    change = dataclasses.replace(change, audit=[*change.audit, ("source", None, source)])
    await recorder.record(session, workspace_id, [change])
    return contact


async def conversation_for(
    session: AsyncSession, *, workspace_id: int, contact_id: int, channel: str, lock: bool = True
) -> tuple[Conversation, bool]:
    """The contact's conversation on `channel`, made if there is none; (conversation, created)."""
    stmt = select(Conversation).where(
        Conversation.workspace_id == workspace_id,
        Conversation.contact_id == contact_id,
        Conversation.channel == channel,
    )
    if lock:
        stmt = stmt.with_for_update()
    conv = (await session.execute(stmt)).scalar_one_or_none()
    if conv is not None:
        return conv, False
    now = utcnow()
    conv = Conversation(
        workspace_id=workspace_id,
        contact_id=contact_id,
        channel=channel,
        status=ConversationStatus.open.value,
        last_message_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(conv)
    await session.flush()
    return conv, True

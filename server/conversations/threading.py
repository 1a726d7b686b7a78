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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import BigInteger, String, Table, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts import changes as recorder
from server.contacts.models import Contact, ContactIdentity
from server.conversations.inbound import Inbound
from server.conversations.models import Conversation, ConversationStatus, InboundMessage
from server.db import one_of, utcnow
from server.events.service import NewEvent
from server.messages.models import Message
from server.webhooks.service import insert_for

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


Address = tuple[str, str]  # (email | phone, lower-cased email or E.164 phone)


def address_of(msg: Inbound) -> Address:
    return ("email", msg.sender) if msg.channel == "email" else ("phone", msg.sender)


async def contacts_by_address(
    session: AsyncSession, workspace_id: int, addresses: Collection[Address]
) -> dict[Address, int]:
    """The contacts whose primary or extra email/phone is one of `addresses`: two queries at most
    whatever their number (the oldest contact when several share a primary phone)."""
    if not addresses:
        return {}
    conn = await session.connection()
    emails = sorted({v for k, v in addresses if k == "email"})
    phones = sorted({v for k, v in addresses if k == "phone"})
    lower_email = func.lower(Contact.email)
    conditions = []
    if emails:
        conditions.append(one_of(conn.dialect.name, lower_email, emails, String()))
    if phones:
        conditions.append(one_of(conn.dialect.name, Contact.phone, phones, String()))
    rows = await session.execute(
        select(Contact.id, lower_email, Contact.phone)
        .where(Contact.workspace_id == workspace_id, or_(*conditions))
        .order_by(Contact.id)
    )
    found: dict[Address, int] = {}
    for contact_id, email, phone in rows.all():
        for key in (("email", email), ("phone", phone)):
            if key in addresses:
                found.setdefault(key, int(contact_id))
    rest = [a for a in addresses if a not in found]
    if rest:
        extra = await session.execute(
            select(ContactIdentity.contact_id, ContactIdentity.kind, ContactIdentity.value).where(
                ContactIdentity.workspace_id == workspace_id,
                one_of(conn.dialect.name, ContactIdentity.value, sorted({v for _, v in rest}), String()),
            )
        )
        for contact_id, kind, value in extra.all():
            if (kind, value) in addresses:
                found.setdefault((kind, value), int(contact_id))
    return found


async def _by_reply_headers(
    session: AsyncSession, workspace_id: int, secret: str, msg: Inbound
) -> int | None:
    """An email's contact by its signed reply address, then its In-Reply-To/References."""
    by_token = [
        mid for t in msg.reply_tokens if (mid := message_of_token(secret, workspace_id, t)) is not None
    ]
    found = await _contact_of_message(session, workspace_id, by_token)
    if found is None:
        found = await _by_references(session, workspace_id, msg.references)
    return found


async def find_contacts(
    session: AsyncSession, *, workspace_id: int, secret: str, items: Sequence[Inbound]
) -> dict[int, int]:
    """Index in `items` → contact id, for the items whose sender is known. Email with reply
    headers is looked up one by one (rare, and first); every sender's address in one go."""
    found: dict[int, int] = {}
    for i, msg in enumerate(items):
        if msg.channel == "email" and (msg.reply_tokens or msg.references):
            if (contact_id := await _by_reply_headers(session, workspace_id, secret, msg)) is not None:
                found[i] = contact_id
    wanted = {i: address_of(msg) for i, msg in enumerate(items) if i not in found}
    by_address = await contacts_by_address(session, workspace_id, set(wanted.values()))
    found.update({i: by_address[a] for i, a in wanted.items() if a in by_address})
    return found


async def new_contacts(
    session: AsyncSession, *, workspace_id: int, senders: Sequence[tuple[Inbound, int]]
) -> tuple[dict[Address, int], list[NewEvent]]:
    """A contact for each unknown sender (message, provider id; one per address), recorded as any
    new contact is (version, audit, event), with one more audit row, `source`, saying it came from
    an inbound message. Returns them by address, and their events for the caller to emit."""
    now = utcnow()
    made: dict[Address, tuple[Contact, Inbound, int]] = {}
    for msg, provider_id in senders:
        address = address_of(msg)
        if address in made:
            continue
        contact = Contact(
            workspace_id=workspace_id,
            name=msg.sender_name[:300],
            email=msg.sender if address[0] == "email" else None,
            phone=msg.sender if address[0] == "phone" else None,
            attributes={},
            tags=[],
            version=1,
            created_at=now,
            updated_at=now,
        )
        made[address] = (contact, msg, provider_id)
    session.add_all([contact for contact, _, _ in made.values()])
    await recorder.flush_contact(session)
    changes = []
    for contact, msg, provider_id in made.values():
        change = recorder.created(contact, by=None)
        source = {"inbound": msg.channel, "provider_id": provider_id, "from": msg.sender}
        changes.append(dataclasses.replace(change, audit=[*change.audit, ("source", None, source)]))
    events = await recorder.record_deferred(session, changes)
    return {address: contact.id for address, (contact, _, _) in made.items()}, events


@dataclass(slots=True)
class Thread:
    """A conversation as inbound threading reads it (the columns its events carry)."""

    id: int
    contact_id: int
    channel: str
    status: str
    assignee_id: int | None


_CONVERSATION = cast(Table, Conversation.__table__)
_THREAD_COLUMNS = (
    _CONVERSATION.c.id,
    _CONVERSATION.c.contact_id,
    _CONVERSATION.c.channel,
    _CONVERSATION.c.status,
    _CONVERSATION.c.assignee_id,
)


async def conversations_for(
    session: AsyncSession, *, workspace_id: int, pairs: Collection[tuple[int, str]]
) -> tuple[dict[tuple[int, str], Thread], set[int]]:
    """The conversation of each (contact id, channel), locked until commit, made where there is
    none (one INSERT for all; one made meanwhile by another transaction is read instead);
    returns them and the ids of those made."""
    conn = await session.connection()

    async def read(contact_ids: list[int]) -> dict[tuple[int, str], Thread]:
        rows = await conn.execute(
            select(*_THREAD_COLUMNS)
            .where(
                _CONVERSATION.c.workspace_id == workspace_id,
                one_of(conn.dialect.name, _CONVERSATION.c.contact_id, contact_ids, BigInteger()),
            )
            .order_by(_CONVERSATION.c.id)
            .with_for_update()
        )
        return {(r.contact_id, r.channel): Thread(*r) for r in rows if (r.contact_id, r.channel) in pairs}

    threads = await read(sorted({c for c, _ in pairs}))
    missing = sorted(p for p in pairs if p not in threads)
    created: set[int] = set()
    if missing:
        now = utcnow()
        inserted = await conn.execute(
            insert_for(conn, _CONVERSATION)
            .on_conflict_do_nothing(index_elements=["workspace_id", "contact_id", "channel"])
            .returning(*_THREAD_COLUMNS),
            [
                {
                    "workspace_id": workspace_id,
                    "contact_id": contact_id,
                    "channel": channel,
                    "status": ConversationStatus.open.value,
                    "last_message_at": now,
                    "last_inbound_at": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for contact_id, channel in missing
            ],
        )
        for r in inserted.all():
            threads[(r.contact_id, r.channel)] = Thread(*r)
            created.add(r.id)
        if raced := sorted({c for c, ch in missing if (c, ch) not in threads}):
            threads.update(await read(raced))
    return threads, created

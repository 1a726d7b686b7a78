"""Inbound messages share the webhooks' group commit: concurrent deliveries, few transactions."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select

from server.contacts.models import Contact
from server.conversations.models import Conversation, InboundMessage
from tests.messages.support import logged

from .support import World

SENDERS = ["+15550000001", "+15550000002", "+15550000003", "+15550000004"]


async def test_concurrent_incoming_sms_share_transactions_and_land_once_threaded_in_order(
    world: World,
) -> None:
    # One known customer (by an earlier message, which also warms the connection cache).
    assert (await world.post_twilio(world.twilio_form("first", sender=SENDERS[0]))).status_code == 200
    forms = [world.twilio_form(f"message {n}", sender=SENDERS[n % len(SENDERS)]) for n in range(24)]
    forms.append(forms[5])  # Twilio retrying one of them within the same burst
    commits = 0

    def on_commit(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    engine = world.db.engine.sync_engine
    sa_event.listen(engine, "commit", on_commit)
    try:
        answers = await asyncio.gather(*(world.post_twilio(form) for form in forms))
    finally:
        sa_event.remove(engine, "commit", on_commit)
    assert [r.status_code for r in answers] == [200] * len(forms)
    assert all(r.content.endswith(b"<Response/>") for r in answers)
    assert commits < len(forms) // 2, commits  # 25 deliveries, a few shared transactions

    async with world.db.transaction() as s:
        contacts = {c.phone: c.id for c in (await s.execute(select(Contact))).scalars()}
        convs = {c.id: c for c in (await s.execute(select(Conversation))).scalars()}
        inbound = (await s.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars().all()
        events = (await s.execute(logged())).scalars().all()
    # every message exactly once (the retry too), one contact and one conversation per sender
    assert sorted(m.text for m in inbound) == sorted(["first", *(f"message {n}" for n in range(24))])
    assert sorted(contacts) == sorted(SENDERS)
    assert len(convs) == len(SENDERS)
    for m in inbound:
        conv = convs[m.conversation_id]
        assert (conv.contact_id, conv.channel) == (contacts[m.from_address], "sms")

    # events: one `conversation.message` per message, each conversation's in the order of its
    # messages, after the one `conversation.created`, itself after its new contact's event
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous
    messages = [e for e in events if e.type == "conversation.message"]
    assert sorted(e.data["message_id"] for e in messages) == [m.id for m in inbound]
    for conv_id, conv in convs.items():
        own = [e for e in events if e.data.get("conversation_id") == conv_id]
        assert own[0].type == "conversation.created"
        assert [e.type for e in own[1:]] == ["conversation.message"] * (len(own) - 1)
        assert [e.data["message_id"] for e in own[1:]] == [
            m.id for m in inbound if m.conversation_id == conv_id
        ]
        born = [
            e.id for e in events if e.type == "contact.created" and e.data["contact_id"] == conv.contact_id
        ]
        assert len(born) == 1 and born[0] < own[0].id

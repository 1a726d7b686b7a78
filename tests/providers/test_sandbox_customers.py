"""The sandbox plays the customers: an SMS/WhatsApp send may be answered by an incoming message,
Twilio-signed, through the app's real inbound path (verification, threading, events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from server.contacts.service import create_contact
from server.conversations.models import Conversation, InboundMessage
from server.providers.adapters import ConfigError
from server.providers.adapters.base import OutgoingMessage
from server.providers.adapters.sandbox import CUSTOMER_REPLIES, SandboxAdapter
from tests.conversations.support import BASE, OUR_SMS, TW_TOKEN, World

PHONE = "+14155550199"


@pytest.fixture
async def world(app: Any) -> AsyncIterator[World]:
    w = await World(app).build()
    yield w
    await w.close()


def customers(world: World, *, rate: float = 1.0, token: str = TW_TOKEN) -> SandboxAdapter:
    config = {
        "delivery_delay_ms": -1,
        "bounce_rate": 0.0,
        "customer_reply_rate": rate,
        "customer_reply_delay_ms": 0,
        "customer_provider_id": world.providers["twilio"],
        "customer_auth_token": token,
        "customer_number": OUR_SMS,
    }
    # The sandbox's own webhook URL: the customers' one is derived from it (same deployment).
    return SandboxAdapter(
        config, http=world.http, provider_id=999, webhook_url=f"{BASE}/webhooks/999", webhook_key="k"
    )


def outgoing(channel: str, n: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=n,
        workspace_id=1,
        channel=channel,
        to=PHONE,
        subject="",
        body="Your appointment is tomorrow.",
        idempotency_key=f"sb-1-{n}",
    )


async def settle(adapter: SandboxAdapter) -> None:
    async with asyncio.timeout(10):
        while adapter.pending_webhooks:
            await asyncio.sleep(0.01)


async def _contact(world: World) -> int:
    async with world.db.transaction() as s:
        c = await create_contact(
            s, workspace_id=world.ws, user_id=None, data={"name": "Dana", "phone": PHONE}
        )
        return c.id


async def test_an_sms_send_is_answered_by_the_customer_through_the_twilio_inbound_path(world: World) -> None:
    contact_id = await _contact(world)
    adapter = customers(world)
    try:
        await adapter.send(outgoing("sms"))
        await adapter.send(outgoing("whatsapp", 2))
        await settle(adapter)
    finally:
        await adapter.aclose()
    async with world.db.transaction() as s:
        rows = (await s.execute(select(InboundMessage, Conversation).join(Conversation))).all()
    by_channel = {conv.channel: (msg, conv) for msg, conv in rows}
    assert set(by_channel) == {"sms", "whatsapp"}
    for msg, conv in by_channel.values():
        assert conv.contact_id == contact_id and conv.status == "open"
        assert msg.from_address == PHONE and msg.to_address == OUR_SMS
        assert msg.text in CUSTOMER_REPLIES and msg.provider_id == world.providers["twilio"]


async def test_customers_answer_only_now_and_then_and_never_on_email(world: World) -> None:
    await _contact(world)
    adapter = customers(world, rate=0.0)
    try:
        await adapter.send(outgoing("sms"))
        email = customers(world)
        await email.send(OutgoingMessage(1, 1, "email", "a@example.test", "s", "b", "sb-1-9"))
        assert not adapter.pending_webhooks and not email.pending_webhooks
    finally:
        await adapter.aclose()


async def test_a_reply_signed_with_the_wrong_token_is_refused_and_stores_nothing(world: World) -> None:
    adapter = customers(world, token="not-the-auth-token")
    task_errors: list[BaseException] = []
    try:
        await adapter.send(outgoing("sms"))
        tasks = list(adapter._webhooks)
        for t in tasks:
            try:
                await t
            except RuntimeError as exc:
                task_errors.append(exc)
    finally:
        await adapter.aclose()
    assert task_errors and "HTTP 401" in str(task_errors[0])
    async with world.db.transaction() as s:
        assert (await s.execute(select(InboundMessage))).first() is None


def test_customer_options_are_all_or_nothing() -> None:
    assert "customer_reply_rate" not in SandboxAdapter.validate_config({})
    with pytest.raises(ConfigError) as invalid:
        SandboxAdapter.validate_config({"customer_provider_id": 5, "customer_number": "12"})
    fields = {e["field"] for e in invalid.value.errors}
    assert fields == {"config.customer_auth_token", "config.customer_number"}
    ok = SandboxAdapter.validate_config({"customer_provider_id": 5, "customer_auth_token": "t"})
    assert ok["customer_reply_rate"] == 0.25 and ok["customer_number"] == "+15005550006"

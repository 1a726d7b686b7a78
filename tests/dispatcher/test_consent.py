"""Consent at send time: marketing to an opted-out contact ends `suppressed` (`opted_out`) and never
reaches a provider; transactional still goes; marketing email carries its unsubscribe link; a lifted
suppression is sendable again."""

from __future__ import annotations

from typing import ClassVar

import orjson
from sqlalchemy import insert, select

from server.consent import service as consent
from server.consent import tokens
from server.consent.models import Consent, ConsentSource, ConsentState
from server.contacts.models import Contact
from server.db import utcnow
from server.messages.models import Message, Suppression
from server.messages.wake import notify_dispatch
from server.providers.adapters import ADAPTERS, OutgoingMessage, PermanentError, SendResult
from server.providers.adapters.twilio import TwilioAdapter
from server.providers.models import Provider
from server.suppressions import service as suppressions
from tests.dispatcher.conftest import DispatcherFactory, SinkFactory, World, wait_until

PUBLIC_URL = "https://switchboard.example.test"


async def _contact(world: World, email: str) -> int:
    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.workspace_id, name=email, email=email, attributes={}, tags=[])
        s.add(c)
        await s.flush()
        return c.id


async def _opt_out(world: World, contact_id: int, channel: str = "email") -> None:
    async with world.db.transaction() as s:
        await consent.record(
            s,
            workspace_id=world.workspace_id,
            contact_id=contact_id,
            channel=channel,
            state=ConsentState.opted_out,
            source=ConsentSource.list_unsubscribe_post,
        )


async def _send(world: World, contact_id: int, to: str, category: str, channel: str = "email") -> int:
    now = utcnow()
    async with world.db.transaction() as s:
        mid = (
            await s.execute(
                insert(Message).returning(Message.id),
                {
                    "workspace_id": world.workspace_id,
                    "contact_id": contact_id,
                    "channel": channel,
                    "category": category,
                    "to_address": to,
                    "subject": "Hi",
                    "body": "Body",
                    "variables": {},
                    "send_at": now,
                    "next_attempt_at": now,
                    "status": "queued",
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        ).scalar_one()
        await notify_dispatch(s)
    return int(mid)


async def _settled(world: World, *ids: int) -> bool:
    statuses = [(await world.get(i)).status for i in ids]
    return all(s in ("sent", "suppressed", "failed") for s in statuses)


async def test_marketing_to_an_opted_out_contact_is_suppressed_and_transactional_still_goes(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    out = await _contact(world, "out@example.test")
    fine = await _contact(world, "fine@example.test")
    await _opt_out(world, out)
    blocked = await _send(world, out, "out@example.test", "marketing")
    receipt = await _send(world, out, "out@example.test", "transactional")
    news = await _send(world, fine, "fine@example.test", "marketing")
    dispatcher = await make_dispatcher(world, public_url=PUBLIC_URL)

    await wait_until(lambda: _settled(world, blocked, receipt, news))

    m = await world.get(blocked)
    assert (m.status, m.reason) == ("suppressed", "opted_out")
    assert await world.history(blocked) == ["suppressed"]  # never shown as sending
    assert (await world.get(receipt)).status == "sent"
    assert (await world.get(news)).status == "sent"
    keys = sorted(r.key for r in sink.requests)
    assert keys == sorted(f"sb-{world.workspace_id}-{i}" for i in (receipt, news))
    assert dispatcher.stats.suppressed == 1


async def test_opting_out_after_the_message_was_created_still_stops_it(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    who = await _contact(world, "late@example.test")
    await make_dispatcher(world)
    first = await _send(world, who, "late@example.test", "marketing")
    await wait_until(lambda: _settled(world, first))
    await _opt_out(world, who)
    second = await _send(world, who, "late@example.test", "marketing")
    await wait_until(lambda: _settled(world, second))
    assert ((await world.get(first)).status, (await world.get(second)).status) == ("sent", "suppressed")
    assert len(sink.requests) == 1


async def test_an_opt_out_on_another_channel_does_not_stop_email(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    who = await _contact(world, "sms-out@example.test")
    await _opt_out(world, who, channel="sms")
    mid = await _send(world, who, "sms-out@example.test", "marketing")
    await make_dispatcher(world)
    await wait_until(lambda: _settled(world, mid))
    assert (await world.get(mid)).status == "sent"


async def test_marketing_email_carries_the_recipients_unsubscribe_link_and_transactional_none(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    who = await _contact(world, "reader@example.test")
    news = await _send(world, who, "reader@example.test", "marketing")
    receipt = await _send(world, who, "reader@example.test", "transactional")
    dispatcher = await make_dispatcher(world, public_url=PUBLIC_URL)
    await wait_until(lambda: _settled(world, news, receipt))

    bodies = {r.key: orjson.loads(r.body) for r in sink.requests}
    link = bodies[f"sb-{world.workspace_id}-{news}"]["unsubscribe_url"]
    assert link.startswith(f"{PUBLIC_URL}/u/")
    asked = tokens.verify([dispatcher.settings.secret_key], link.rpartition("/u/")[2])
    assert asked is not None
    assert (asked.workspace_id, asked.contact_id, asked.channel) == (world.workspace_id, who, "email")
    assert "unsubscribe_url" not in bodies[f"sb-{world.workspace_id}-{receipt}"]


async def test_a_lifted_suppression_is_sendable_again(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    who = await _contact(world, "mistake@example.test")
    await world.suppress("mistake@example.test")
    await make_dispatcher(world)
    before = await _send(world, who, "mistake@example.test", "transactional")
    await wait_until(lambda: _settled(world, before))
    assert (await world.get(before)).status == "suppressed"

    async with world.db.transaction() as s:
        row_id = (await s.execute(select(Suppression.id))).scalar_one()
        await suppressions.lift_suppression(s, workspace_id=world.workspace_id, suppression_id=row_id)
    after = await _send(world, who, "mistake@example.test", "transactional")
    await wait_until(lambda: _settled(world, after))
    assert (await world.get(after)).status == "sent"  # the filter's hit is checked against the table
    assert [r.key for r in sink.requests] == [f"sb-{world.workspace_id}-{after}"]


class _UnsubscribedAtTwilio(TwilioAdapter):
    """Twilio answering 21610: the recipient sent STOP to Twilio itself."""

    sent: ClassVar[list[str]] = []

    async def send(self, msg: OutgoingMessage) -> SendResult:
        self.sent.append(msg.to)
        raise PermanentError("Attempt to send to unsubscribed recipient", status=400, code="21610")


async def test_twilio_error_21610_records_an_opt_out_and_the_message_ends_opted_out(
    world: World, make_dispatcher: DispatcherFactory
) -> None:
    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.workspace_id, name="Sam", phone="+14155550123", attributes={}, tags=[])
        s.add(c)
        s.add(
            Provider(
                workspace_id=world.workspace_id,
                name="twilio",
                kind="twilio",
                channel="sms",
                priority=1,
                config={"account_sid": "AC" + "0" * 32, "auth_token": "t", "from_number": "+15550001111"},
                webhook_key="k",
            )
        )
        await s.flush()
        who = c.id
    _UnsubscribedAtTwilio.sent = []
    mid = await _send(world, who, "+14155550123", "transactional", channel="sms")
    await make_dispatcher(world, adapters={**ADAPTERS, "twilio": _UnsubscribedAtTwilio})
    await wait_until(lambda: _settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.reason) == ("suppressed", "opted_out")
    async with world.db.sessions() as s:
        [row] = (await s.execute(select(Consent))).scalars()
        assert await consent.opted_out(s, [(who, "sms")]) == {(who, "sms")}
    assert (row.channel, row.state, row.source) == ("sms", "opted_out", "provider")
    assert row.evidence == {"message_id": mid, "provider": "twilio", "error": "21610"}
    # the next marketing SMS is stopped before it reaches Twilio
    news = await _send(world, who, "+14155550123", "marketing", channel="sms")
    await wait_until(lambda: _settled(world, news))
    assert (await world.get(news)).reason == "opted_out"
    assert _UnsubscribedAtTwilio.sent == ["+14155550123"]

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


async def _send(
    world: World,
    contact_id: int,
    to: str,
    category: str,
    channel: str = "email",
    from_address: str | None = None,
) -> int:
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
                    "from_address": from_address,
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
        assert await consent.opted_out_scopes(s, [(who, "sms")]) == {(who, "sms"): {"+15550001111"}}
    assert (row.channel, row.state, row.source) == ("sms", "opted_out", "provider")
    assert row.evidence == {"message_id": mid, "provider": "twilio", "error": "21610"}
    # the next marketing SMS is stopped before it reaches Twilio
    news = await _send(world, who, "+14155550123", "marketing", channel="sms")
    await wait_until(lambda: _settled(world, news))
    assert (await world.get(news)).reason == "opted_out"
    assert _UnsubscribedAtTwilio.sent == ["+14155550123"]


NUMBER_A = "+15550000001"
NUMBER_B = "+15550000002"


class _RecordingTwilio(TwilioAdapter):
    """Twilio accepting every send, keeping (from, to) of each."""

    sent: ClassVar[list[tuple[str, str]]] = []

    async def send(self, msg: OutgoingMessage) -> SendResult:
        self.sent.append((self.sender(msg) or str(self.config["from_number"]), msg.to))
        return SendResult(f"SM{len(self.sent)}")


async def _twilio(world: World, name: str, from_number: str, priority: int) -> None:
    async with world.db.transaction() as s:
        s.add(
            Provider(
                workspace_id=world.workspace_id,
                name=name,
                kind="twilio",
                channel="sms",
                priority=priority,
                config={"account_sid": "AC" + "0" * 32, "auth_token": "t", "from_number": from_number},
                webhook_key=name,
            )
        )


async def _phone_contact(world: World, phone: str) -> int:
    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.workspace_id, name=phone, phone=phone, attributes={}, tags=[])
        s.add(c)
        await s.flush()
        return c.id


async def _stop(world: World, contact_id: int, scope: str) -> None:
    async with world.db.transaction() as s:
        await consent.record(
            s,
            workspace_id=world.workspace_id,
            contact_id=contact_id,
            channel="sms",
            state=ConsentState.opted_out,
            source=ConsentSource.keyword,
            scope=scope,
        )


async def test_a_stop_to_one_number_blocks_marketing_from_that_number_only_and_stopall_from_every_one(
    world: World, make_dispatcher: DispatcherFactory
) -> None:
    await _twilio(world, "number-a", NUMBER_A, priority=1)
    await _twilio(world, "number-b", NUMBER_B, priority=2)
    stopped_at_a = await _phone_contact(world, "+14155550101")
    stopped_all = await _phone_contact(world, "+14155550102")
    await _stop(world, stopped_at_a, NUMBER_A)
    await _stop(world, stopped_all, "all")
    _RecordingTwilio.sent = []
    # A is the first choice: the contact who wrote STOP to A gets this one from B instead.
    news = await _send(world, stopped_at_a, "+14155550101", "marketing", channel="sms")
    # ...but not one that must go out from A (a reply in the conversation held with A).
    from_a = await _send(
        world, stopped_at_a, "+14155550101", "marketing", channel="sms", from_address=NUMBER_A
    )
    from_b = await _send(
        world, stopped_at_a, "+14155550101", "marketing", channel="sms", from_address=NUMBER_B
    )
    receipt = await _send(
        world, stopped_at_a, "+14155550101", "transactional", channel="sms", from_address=NUMBER_A
    )
    everywhere = await _send(world, stopped_all, "+14155550102", "marketing", channel="sms")
    dispatcher = await make_dispatcher(world, adapters={**ADAPTERS, "twilio": _RecordingTwilio})
    await wait_until(lambda: _settled(world, news, from_a, from_b, receipt, everywhere))

    assert (await world.get(news)).status == "sent"
    assert (await world.get(from_b)).status == "sent"
    assert (await world.get(receipt)).status == "sent"
    for blocked in (from_a, everywhere):
        m = await world.get(blocked)
        assert (m.status, m.reason, m.provider_id) == ("suppressed", "opted_out", None)
    assert await world.history(everywhere) == ["suppressed"]  # STOPALL: stopped at claim time
    assert sorted(_RecordingTwilio.sent) == sorted(
        [(NUMBER_B, "+14155550101"), (NUMBER_B, "+14155550101"), (NUMBER_A, "+14155550101")]
    )
    assert dispatcher.stats.suppressed == 2


async def test_a_stop_to_one_number_blocks_marketing_through_a_messaging_service_that_picks_the_number(
    world: World, make_dispatcher: DispatcherFactory
) -> None:
    await _twilio(world, "service", "MG" + "0" * 32, priority=1)
    stopped_at_a = await _phone_contact(world, "+14155550103")
    free = await _phone_contact(world, "+14155550104")
    await _stop(world, stopped_at_a, NUMBER_A)
    _RecordingTwilio.sent = []
    blocked = await _send(world, stopped_at_a, "+14155550103", "marketing", channel="sms")
    sent = await _send(world, free, "+14155550104", "marketing", channel="sms")
    await make_dispatcher(world, adapters={**ADAPTERS, "twilio": _RecordingTwilio})
    await wait_until(lambda: _settled(world, blocked, sent))

    assert ((await world.get(blocked)).status, (await world.get(blocked)).reason) == (
        "suppressed",
        "opted_out",
    )
    assert (await world.get(sent)).status == "sent"
    assert [to for _, to in _RecordingTwilio.sent] == ["+14155550104"]


async def test_start_at_the_number_lifts_its_stop(world: World, make_dispatcher: DispatcherFactory) -> None:
    await _twilio(world, "number-a", NUMBER_A, priority=1)
    who = await _phone_contact(world, "+14155550105")
    await _stop(world, who, NUMBER_A)
    async with world.db.transaction() as s:
        await consent.record(
            s,
            workspace_id=world.workspace_id,
            contact_id=who,
            channel="sms",
            state=ConsentState.opted_in,
            source=ConsentSource.keyword,
            scope=NUMBER_A,
        )
    _RecordingTwilio.sent = []
    mid = await _send(world, who, "+14155550105", "marketing", channel="sms")
    await make_dispatcher(world, adapters={**ADAPTERS, "twilio": _RecordingTwilio})
    await wait_until(lambda: _settled(world, mid))
    assert (await world.get(mid)).status == "sent"
    assert _RecordingTwilio.sent == [(NUMBER_A, "+14155550105")]

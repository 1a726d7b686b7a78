"""Quiet hours at send time, and a provider's "the recipient opted out" (Twilio 21610) as an opt-out."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import orjson
from sqlalchemy import insert, select

from bench.dispatch.sink import Answer, Received
from server.consent import quiet
from server.consent.localtime import QuietHours
from server.consent.models import ConsentCurrent
from server.contacts.models import Contact
from server.db import utcnow
from server.messages import claims
from server.messages.models import Message
from server.providers.models import Provider
from server.workspaces.models import Workspace
from tests.dispatcher.conftest import DispatcherFactory, SinkFactory, World, wait_until

UTC = dt.UTC


async def configure(world: World, **settings: Any) -> None:
    async with world.db.transaction() as s:
        ws = await s.get(Workspace, world.workspace_id)
        assert ws is not None
        ws.settings = settings


async def contact(world: World, *, phone: str | None = None, **attributes: str) -> int:
    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.workspace_id, name="C", phone=phone, attributes=attributes)
        s.add(c)
        await s.flush()
        return c.id


async def message(
    world: World, contact_id: int, *, category: str, channel: str = "email", to: str = "c@example.test"
) -> int:
    now = utcnow()
    row = {
        "workspace_id": world.workspace_id,
        "contact_id": contact_id,
        "channel": channel,
        "to_address": to,
        "category": category,
        "subject": "Hi",
        "body": "Hello",
        "variables": {},
        "send_at": now,
        "next_attempt_at": now,
        "status": "queued",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    async with world.db.transaction() as s:
        return (await s.execute(insert(Message).returning(Message.id), [row])).scalar_one()


def hhmm(t: dt.datetime) -> str:
    return f"{t:%H:%M}"


async def test_marketing_due_in_quiet_hours_stays_scheduled_until_the_window_ends_and_transactional_goes(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    now = utcnow()
    window = {"start": hhmm(now - dt.timedelta(hours=1)), "end": hhmm(now + dt.timedelta(hours=2))}
    await configure(world, quiet_hours=window)
    who = await contact(world, timezone="UTC")
    promo = await message(world, who, category="marketing")
    receipt = await message(world, who, category="transactional")
    dispatcher = await make_dispatcher(world)

    await wait_until(lambda: _status_is(world, receipt, "sent"))
    await wait_until(lambda: _status_is(world, promo, "scheduled"))

    m = await world.get(promo)
    expected = QuietHours.of(window).until(now, UTC)
    assert expected is not None and m.send_at == expected == m.next_attempt_at
    assert m.reason == f"held by quiet hours until {expected:%Y-%m-%dT%H:%M:%SZ} ({expected:%H:%M} UTC)"
    assert m.attempts == 0  # a hold is not an attempt
    assert await world.history(promo) == ["scheduled"]  # the timeline says why; never shown sending
    assert [r.key for r in sink.requests] == [f"sb-{world.workspace_id}-{receipt}"]
    assert dispatcher.stats.held == 1


async def _status_is(world: World, message_id: int, status: str) -> bool:
    return (await world.get(message_id)).status == status


async def test_holds_on_a_fixed_clock_follow_each_contacts_zone_across_the_dst_change(world: World) -> None:
    # 2026-03-08 11:30 UTC: 07:30 EDT in New York (the clocks jumped at 02:00), 12:30 in Paris.
    now = dt.datetime(2026, 3, 8, 11, 30, tzinfo=UTC)
    await configure(world, quiet_hours={"start": "21:00", "end": "08:00"}, timezone="Europe/Paris")
    by_attribute = await message(
        world, await contact(world, timezone="America/New_York"), category="marketing"
    )
    by_number = await message(
        world, await contact(world), category="marketing", channel="sms", to="+12125550100"
    )
    by_default = await message(world, await contact(world), category="marketing")
    receipt = await message(
        world, await contact(world, timezone="America/New_York"), category="transactional"
    )
    async with world.db.transaction() as s:
        claimed = await claims.claim_due(s, limit=10, lease_s=60, record=False)
        held = await quiet.holds(s, claimed, now=now)
        await claims.hold(s, held)

    until = dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # 08:00 EDT, not 08:00 EST
    assert {(m.id, at) for m, at, _ in held} == {(by_attribute, until), (by_number, until)}
    for mid in (by_attribute, by_number):
        m = await world.get(mid)
        assert (m.status, m.send_at, m.attempts) == ("scheduled", until, 0)
        assert m.reason == "held by quiet hours until 2026-03-08T12:00:00Z (08:00 America/New_York)"
    assert {(await world.get(mid)).status for mid in (by_default, receipt)} == {"sending"}


async def test_without_quiet_hours_nothing_is_held(world: World) -> None:
    await message(world, await contact(world, timezone="Pacific/Kiritimati"), category="marketing")
    async with world.db.transaction() as s:
        claimed = await claims.claim_due(s, limit=10, lease_s=60, record=False)
        assert await quiet.holds(s, claimed, now=utcnow()) == []


async def test_twilio_21610_on_a_send_records_an_opt_out_and_later_marketing_is_suppressed(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    def unsubscribed(_: Received) -> Answer:
        body = {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}
        return Answer(400, orjson.dumps(body))

    sink = await make_sink(unsubscribed)
    async with world.db.transaction() as s:
        s.add(
            Provider(
                workspace_id=world.workspace_id,
                name="twilio",
                kind="twilio",
                channel="sms",
                priority=10,
                config={
                    "account_sid": "AC" + "0" * 32,
                    "auth_token": "t" * 32,
                    "from_number": "+15005550006",
                    "base_url": f"http://127.0.0.1:{sink.port}",
                },
                webhook_key=secrets.token_hex(16),
            )
        )
    who = await contact(world, phone="+12125550100")
    first = await message(world, who, category="transactional", channel="sms", to="+12125550100")
    await make_dispatcher(world)
    await wait_until(lambda: _status_is(world, first, "suppressed"))
    assert (await world.get(first)).reason == "opted_out"

    async with world.db.transaction() as s:
        [row] = (await s.execute(select(ConsentCurrent))).scalars().all()
    assert (row.contact_id, row.channel, row.scope, row.state, row.source) == (
        who,
        "sms",
        "+15005550006",
        "opted_out",
        "provider",
    )
    promo = await message(world, who, category="marketing", channel="sms", to="+12125550100")
    await wait_until(lambda: _status_is(world, promo, "suppressed"))
    assert (await world.get(promo)).reason == "opted_out"
    assert len(sink.requests) == 1

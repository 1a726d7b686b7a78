"""`apply_events` against a migrated database: idempotent, monotonic, tenant-scoped, batched."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from server.db import Database
from server.events.models import Event
from server.messages.models import Message, MessageEvent, Suppression
from server.providers.models import Provider
from server.webhooks.parse import parse
from server.webhooks.service import apply_events, moves_forward
from server.workspaces.models import Workspace
from tests.messages.support import logged

from .payloads import SG_X_MESSAGE_ID, sendgrid_event, twilio_body, twilio_form

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


async def make_workspace(db: Database, name: str) -> int:
    async with db.transaction() as s:
        ws = Workspace(name=name)
        s.add(ws)
        await s.flush()
        return ws.id


async def make_provider(db: Database, workspace_id: int, kind: str = "sendgrid") -> Provider:
    async with db.transaction() as s:
        p = Provider(
            workspace_id=workspace_id, name=kind, kind=kind, channel="email", config={}, webhook_key="k"
        )
        s.add(p)
        await s.flush()
        return p


async def make_message(
    db: Database,
    workspace_id: int,
    *,
    status: str = "sent",
    provider_message_id: str | None = SG_X_MESSAGE_ID,
    provider_id: int | None = None,
    to: str = "Example@Example.test",
    channel: str = "email",
) -> int:
    async with db.transaction() as s:
        m = Message(
            workspace_id=workspace_id,
            channel=channel,
            to_address=to,
            status=status,
            provider_message_id=provider_message_id,
            provider_id=provider_id,
        )
        s.add(m)
        await s.flush()
        return m.id


async def deliver(
    db: Database, provider: Provider, items: list[dict[str, Any]], kind: str = "sendgrid"
) -> Any:
    events = parse(kind, json.dumps(items).encode(), now=NOW)
    async with db.transaction() as s:
        return await apply_events(s, provider=provider, events=events)


async def status_of(db: Database, message_id: int) -> str:
    async with db.transaction() as s:
        return (await s.execute(select(Message.status).where(Message.id == message_id))).scalar_one()


async def log(db: Database, workspace_id: int) -> list[Event]:
    """The workspace's events, without the board feed's periodic `board.counters` (the app's feed
    folds counter moves on its own clock, so one can land between any two reads)."""
    async with db.transaction() as s:
        return list((await s.execute(logged(Event.workspace_id == workspace_id))).scalars())


async def message_events(db: Database, provider_id: int) -> list[MessageEvent]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(MessageEvent).where(MessageEvent.provider_id == provider_id).order_by(MessageEvent.id)
        )
        return list(rows.scalars())


def test_moves_forward_never_goes_back() -> None:
    assert moves_forward("sent", "delivered")
    assert moves_forward("queued", "delivered")
    assert moves_forward("sent", "bounced")
    assert not moves_forward("delivered", "sent")
    assert not moves_forward("delivered", "bounced")
    assert not moves_forward("sent", "sent")
    assert not moves_forward("sending", "queued")  # the dispatcher's retry step, not a provider's
    assert not moves_forward("canceled", "delivered")
    assert not moves_forward("sent", "opened")


async def test_mixed_batch_records_every_event_and_moves_status_once(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    mid = await make_message(db, ws, provider_id=provider.id)
    result = await deliver(
        db,
        provider,
        [
            sendgrid_event("processed", 1),
            sendgrid_event("deferred", 2),
            sendgrid_event("delivered", 3),
            sendgrid_event("open", 4),
            sendgrid_event("click", 5),
        ],
    )
    assert (result.received, result.recorded, result.duplicates, result.status_changes) == (5, 5, 0, 1)
    assert await status_of(db, mid) == "delivered"
    rows = await message_events(db, provider.id)
    assert [(r.message_id, r.status) for r in rows] == [
        (mid, "accepted"),
        (mid, "deferred"),
        (mid, "delivered"),
        (mid, "opened"),
        (mid, "clicked"),
    ]
    assert rows[0].raw is not None and rows[0].raw["sg_event_id"] == "sg_event_id-processed-1"
    [ev] = await log(db, ws)
    assert ev.type == "message.status" and ev.contact_id is None
    assert ev.data == {
        "message_id": mid,
        "contact_id": None,
        "channel": "email",
        "status": "delivered",
        "provider": "sendgrid",
        "reason": None,
    }


async def test_replayed_delivery_changes_nothing(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    mid = await make_message(db, ws, status="queued")
    batch = [sendgrid_event("processed", 1), sendgrid_event("bounce", 2, type="bounce", reason="550 no user")]
    first = await deliver(db, provider, batch)
    assert (first.recorded, first.status_changes, first.suppressions) == (2, 2, 1)
    before = (await log(db, ws), await message_events(db, provider.id))
    again = await deliver(db, provider, batch)
    assert (again.recorded, again.duplicates, again.status_changes, again.suppressions) == (0, 2, 0, 0)
    after = (await log(db, ws), await message_events(db, provider.id))
    assert [e.id for e in after[0]] == [e.id for e in before[0]]
    assert [r.id for r in after[1]] == [r.id for r in before[1]]
    assert await status_of(db, mid) == "bounced"


async def test_same_event_twice_in_one_delivery_counts_once(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    await make_message(db, ws)
    result = await deliver(db, provider, [sendgrid_event("delivered", 1), sendgrid_event("delivered", 1)])
    assert (result.recorded, result.duplicates, result.status_changes) == (1, 1, 1)


async def test_out_of_order_events_never_move_back(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws, kind="twilio")
    mid = await make_message(
        db, ws, status="sending", provider_message_id="SMabc", channel="sms", to="+15558675310"
    )

    async def callback(status: str) -> Any:
        events = parse("twilio", twilio_body(twilio_form(status, sid="SMabc")), now=NOW)
        async with db.transaction() as s:
            return await apply_events(s, provider=provider, events=events)

    assert (await callback("delivered")).status_changes == 1
    for late in ("queued", "sending", "sent"):
        result = await callback(late)
        assert (result.recorded, result.status_changes) == (1, 0)
    assert await status_of(db, mid) == "delivered"
    assert [r.status for r in await message_events(db, provider.id)] == [
        "delivered",
        "queued",
        "sending",
        "sent",
    ]
    assert [e.data["status"] for e in await log(db, ws)] == ["delivered"]


async def test_batch_is_applied_in_event_time_order(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    mid = await make_message(db, ws, status="queued")
    # delivered (t=3) listed before processed (t=1): both apply, in the order they happened
    await deliver(db, provider, [sendgrid_event("delivered", 3), sendgrid_event("processed", 1)])
    assert await status_of(db, mid) == "delivered"
    assert [e.data["status"] for e in await log(db, ws)] == ["sent", "delivered"]


async def test_hard_bounce_spam_and_unsubscribe_suppress_soft_ones_do_not(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    hard = await make_message(db, ws, provider_message_id="hard")
    soft = await make_message(db, ws, provider_message_id="soft")
    await make_message(db, ws, provider_message_id="later", status="delivered")
    result = await deliver(
        db,
        provider,
        [
            sendgrid_event(
                "bounce",
                1,
                type="bounce",
                reason="550 5.1.1 no such user",
                email="Hard@Example.TEST",
                sg_message_id="hard.filter1",
            ),
            sendgrid_event(
                "bounce",
                2,
                type="blocked",
                reason="421 try later",
                email="soft@example.test",
                sg_message_id="soft.filter1",
            ),
            sendgrid_event("deferred", 3, email="deferred@example.test", sg_message_id="soft.filter1"),
            sendgrid_event("spamreport", 4, email="spam@example.test", sg_message_id="later.filter1"),
            sendgrid_event("unsubscribe", 5, email="unsub@example.test", sg_message_id="later.filter1"),
            sendgrid_event("group_unsubscribe", 6, email="unsub@example.test", sg_message_id="later.filter1"),
        ],
    )
    assert result.suppressions == 3
    assert await status_of(db, hard) == "bounced"
    assert await status_of(db, soft) == "bounced"
    async with db.transaction() as s:
        rows = (await s.execute(select(Suppression).order_by(Suppression.address))).scalars().all()
        source = {r.id: r for r in (await s.execute(select(MessageEvent))).scalars()}
    assert [(r.address, r.reason) for r in rows] == [
        ("hard@example.test", "bounce"),
        ("spam@example.test", "spam"),
        ("unsub@example.test", "unsubscribe"),
    ]
    assert all(r.workspace_id == ws for r in rows)
    assert source[rows[0].source_event_id].provider_event_id == "sg_event_id-bounce-1"
    events = await log(db, ws)
    created = [e.data for e in events if e.type == "suppression.created"]
    assert [(d["address"], d["reason"]) for d in created] == [
        ("hard@example.test", "bounce"),
        ("spam@example.test", "spam"),
        ("unsub@example.test", "unsubscribe"),
    ]
    bounced = [e.data for e in events if e.type == "message.status" and e.data["message_id"] == hard]
    assert bounced[0]["status"] == "bounced" and bounced[0]["reason"] == "550 5.1.1 no such user"
    async with db.transaction() as s:
        reason = (await s.execute(select(Message.reason).where(Message.id == hard))).scalar_one()
    assert reason == "550 5.1.1 no such user"


async def test_suppression_falls_back_to_the_message_address(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    await make_message(db, ws, to="Someone@Example.test")
    item = sendgrid_event("spamreport", 1)
    del item["email"]
    await deliver(db, provider, [item])
    async with db.transaction() as s:
        assert (await s.execute(select(Suppression.address))).scalars().all() == ["someone@example.test"]


async def test_another_workspaces_message_is_never_touched(db: Database) -> None:
    ours = await make_workspace(db, "ours")
    theirs = await make_workspace(db, "theirs")
    provider = await make_provider(db, ours)
    victim = await make_message(db, theirs, status="sent", provider_message_id=SG_X_MESSAGE_ID)
    result = await deliver(
        db,
        provider,
        [
            sendgrid_event("delivered", 1),  # names their provider message id
            sendgrid_event("bounce", 2, type="bounce", message_id=victim),  # names their message by our id
        ],
    )
    assert (result.recorded, result.unmatched, result.status_changes) == (2, 2, 0)
    assert await status_of(db, victim) == "sent"
    assert [r.message_id for r in await message_events(db, provider.id)] == [None, None]
    assert [r.workspace_id for r in await message_events(db, provider.id)] == [ours, ours]
    assert await log(db, theirs) == []
    assert [e.type for e in await log(db, ours)] == ["suppression.created"]


async def test_our_message_id_is_preferred_and_unknown_messages_are_kept(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    mid = await make_message(db, ws, provider_message_id=None, status="sending")
    result = await deliver(
        db,
        provider,
        [
            sendgrid_event("delivered", 1, message_id=mid, sg_message_id="notstored.filter"),
            sendgrid_event("delivered", 2, sg_message_id="nobody.filter"),
        ],
    )
    assert (result.recorded, result.unmatched, result.status_changes) == (2, 1, 1)
    assert await status_of(db, mid) == "delivered"
    assert [r.message_id for r in await message_events(db, provider.id)] == [mid, None]


async def test_sent_sets_sent_at_once(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    mid = await make_message(db, ws, status="sending")
    await deliver(db, provider, [sendgrid_event("processed", 1)])
    async with db.transaction() as s:
        sent_at = (await s.execute(select(Message.sent_at).where(Message.id == mid))).scalar_one()
    assert sent_at == dt.datetime.fromtimestamp(1764000001, dt.UTC)


@contextmanager
def count_statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []
    # Only this task's statements: the app's background components (the realtime relay's poll)
    # share the engine.
    task = asyncio.current_task()

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if asyncio.current_task() is task:
            seen.append(statement.split(None, 1)[0].upper())

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", before)


async def test_a_thousand_events_cost_the_same_statements_as_ten(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    async with db.transaction() as s:
        s.add_all(
            Message(
                workspace_id=ws,
                channel="email",
                to_address=f"u{i}@example.test",
                status="sent",
                provider_message_id=f"pm{i}",
            )
            for i in range(1000)
        )

    def batch(n: int, offset: int) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            kind = ("delivered", "open", "bounce")[i % 3]
            out.append(
                sendgrid_event(
                    kind,
                    offset + i,
                    sg_message_id=f"pm{offset + i}.f",
                    type="bounce",
                    email=f"u{offset + i}@example.test",
                )
            )
        return out

    with count_statements(db) as small:
        r10 = await deliver(db, provider, batch(10, 0))
    with count_statements(db) as big:
        r1000 = await deliver(db, provider, batch(990, 10))
    assert (r10.recorded, r1000.recorded) == (10, 990)
    assert r1000.status_changes == 660 and r1000.suppressions == 330
    assert small == big, (small, big)
    assert len(big) <= 12
    async with db.transaction() as s:
        total = (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one()
        n_logged = len((await s.execute(logged())).all())
    assert total == 1000
    # every status change and new suppression of both deliveries, each logged once
    assert n_logged == r10.status_changes + r10.suppressions + 660 + 330 == 1000


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite serialises writers
async def test_concurrent_deliveries_of_one_batch_record_it_once(db: Database) -> None:
    assert db.dialect == "postgresql"
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws)
    ids = [await make_message(db, ws, provider_message_id=f"c{i}", status="sent") for i in range(20)]
    batch = [sendgrid_event("delivered", i, sg_message_id=f"c{i}.f") for i in range(20)]
    results = await asyncio.gather(*(deliver(db, provider, batch) for _ in range(5)))
    assert sum(r.recorded for r in results) == 20
    assert sum(r.status_changes for r in results) == 20
    assert len(await log(db, ws)) == 20
    assert {await status_of(db, i) for i in ids} == {"delivered"}


async def test_provider_ids_stored_in_angle_brackets_still_match(db: Database) -> None:
    ws = await make_workspace(db, "acme")
    provider = await make_provider(db, ws, kind="mailgun")
    # Mailgun's send answers `"id": "<…@domain>"`; its events name the message without the brackets.
    mid = await make_message(db, ws, provider_message_id="<20260203.abc@mg.example.test>")
    body = json.dumps(
        {
            "event-data": {
                "event": "delivered",
                "id": "mg-1",
                "timestamp": 1764000000,
                "message": {"headers": {"message-id": "20260203.abc@mg.example.test"}},
            }
        }
    )
    events = parse("mailgun", body.encode(), now=NOW)
    async with db.transaction() as s:
        result = await apply_events(s, provider=provider, events=events)
    assert (result.unmatched, result.status_changes) == (0, 1)
    assert await status_of(db, mid) == "delivered"

"""Claiming: leases taken back from dead workers, fencing of stale claims, no double send."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from server.db import utcnow
from server.messages import claims
from server.messages.claims import Outcome
from server.messages.models import Message, MessageStatus
from tests.dispatcher.conftest import DispatcherFactory, SinkFactory, World, wait_until


async def put_in_sending(world: World, mid: int, *, lease_until: dt.datetime, attempts: int = 1) -> None:
    """As a worker that claimed the message and then died would leave it."""
    async with world.db.transaction() as s:
        await s.execute(
            update(Message)
            .where(Message.id == mid)
            .values(status="sending", lease_until=lease_until, attempts=attempts)
        )


async def test_a_dead_workers_message_is_taken_back_after_its_lease(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    expired, held = await world.messages(2)
    await put_in_sending(world, expired, lease_until=utcnow() - dt.timedelta(seconds=1))
    await put_in_sending(world, held, lease_until=utcnow() + dt.timedelta(minutes=5))
    dispatcher = await make_dispatcher(world)

    await wait_until(lambda: _status_is(world, expired, "sent"))

    m = await world.get(expired)
    assert m.attempts == 2
    assert await world.history(expired) == ["queued", "sending", "sent"]
    assert (await world.get(held)).status == "sending"  # its lease still runs: not touched
    assert [r.key for r in sink.requests] == [f"sb-{world.workspace_id}-{expired}"]
    assert dispatcher.stats.reclaimed == 1


async def test_a_message_that_keeps_losing_its_worker_fails_after_max_attempts(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    [mid] = await world.messages(1)
    await put_in_sending(world, mid, lease_until=utcnow() - dt.timedelta(seconds=1), attempts=3)
    await make_dispatcher(world, max_attempts=3)

    await wait_until(lambda: _status_is(world, mid, "failed"))

    assert (await world.get(mid)).reason == "worker lost while sending, 3 attempts used"
    assert sink.requests == []


async def test_a_stale_claims_outcome_is_not_written(world: World) -> None:
    [mid] = await world.messages(1)
    async with world.db.transaction() as s:
        [first] = await claims.claim_due(s, limit=10, lease_s=0)
    async with world.db.transaction() as s:  # the lease passed: taken back and claimed again
        await claims.reclaim_expired(s, max_attempts=5)
        await s.execute(update(Message).where(Message.id == mid).values(next_attempt_at=utcnow()))
    async with world.db.transaction() as s:
        [second] = await claims.claim_due(s, limit=10, lease_s=60)
    assert (first.attempts, second.attempts) == (1, 2)

    async with world.db.transaction() as s:
        stale = await claims.finish(s, [Outcome(first, MessageStatus.failed, "late answer")])
        fresh = await claims.finish(s, [Outcome(second, MessageStatus.sent, provider_message_id="p-2")])

    assert stale == [] and [c.status for c in fresh] == ["sent"]
    m = await world.get(mid)
    assert (m.status, m.provider_message_id, m.reason) == ("sent", "p-2", None)


async def test_claim_takes_only_due_messages_oldest_first(world: World) -> None:
    now = utcnow()
    later = await world.messages(1, send_at=now + dt.timedelta(hours=1))
    old = await world.messages(1, send_at=now - dt.timedelta(minutes=5))
    new = await world.messages(1, send_at=now - dt.timedelta(seconds=1))
    async with world.db.transaction() as s:
        got = await claims.claim_due(s, limit=10, lease_s=60)
        nxt = await claims.next_due(s)
    assert [c.id for c in got] == old + new
    assert nxt is not None and abs((nxt - (now + dt.timedelta(hours=1))).total_seconds()) < 0.01
    assert (await world.get(later[0])).status == "scheduled"


async def test_two_dispatchers_never_send_a_message_twice(
    pg_world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await pg_world.provider(sink.url)
    one = await make_dispatcher(pg_world, dispatcher_batch=20)
    two = await make_dispatcher(pg_world, dispatcher_batch=20)
    ids = await pg_world.messages(1000, to=lambda i: f"user{i}@example.test")

    await wait_until(lambda: _all_sent(pg_world, len(ids)), within=30)

    assert len(sink.requests) == 1000 and len(sink.counts) == 1000  # every key once, none twice
    assert set(sink.counts) == {f"sb-{pg_world.workspace_id}-{i}" for i in ids}
    assert one.stats.sent > 0 and two.stats.sent > 0  # both took part
    assert one.stats.sent + two.stats.sent == 1000


async def test_notify_wakes_the_worker_at_once(
    pg_world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await pg_world.provider(sink.url)
    await make_dispatcher(pg_world, dispatcher_poll_s=30.0)
    await wait_until(lambda: _listening(pg_world))
    before = utcnow()
    [mid] = await pg_world.messages(1)  # commits with NOTIFY switchboard_dispatch

    await wait_until(lambda: _status_is(pg_world, mid, "sent"), within=5)

    assert sink.requests[0].at - before.timestamp() < 0.5


async def _listening(world: World) -> bool:
    from sqlalchemy import text

    async with world.db.sessions() as s:
        n = await s.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
        return bool(n.scalar())


async def _status_is(world: World, mid: int, status: str) -> bool:
    return (await world.get(mid)).status == status


async def _all_sent(world: World, n: int) -> bool:
    return (await world.statuses()).get("sent", 0) == n

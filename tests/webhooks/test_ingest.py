"""Group commit: concurrent deliveries share transactions, each told what its own events did."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from server.db import Database
from server.events.models import Event
from server.messages.models import Message, MessageEvent
from server.providers.models import Provider
from server.webhooks.ingest import Ingest, ProviderCache
from server.webhooks.parse import ProviderEvent, parse
from server.workspaces.models import Workspace

from .payloads import sendgrid_event

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


async def setup(db: Database, messages: int) -> int:
    async with db.transaction() as s:
        ws = Workspace(name="acme")
        s.add(ws)
        await s.flush()
        provider = Provider(
            workspace_id=ws.id, name="sg", kind="sendgrid", channel="email", config={}, webhook_key="k"
        )
        s.add(provider)
        s.add_all(
            Message(
                workspace_id=ws.id,
                channel="email",
                to_address=f"u{i}@example.test",
                status="sent",
                provider_message_id=f"m{i}",
            )
            for i in range(messages)
        )
        await s.flush()
        return provider.id


def events(*items: dict[str, Any]) -> list[ProviderEvent]:
    return parse("sendgrid", json.dumps(list(items)).encode(), now=NOW)


async def test_concurrent_deliveries_share_transactions_and_get_their_own_counts(db: Database) -> None:
    provider_id = await setup(db, 40)
    provider = await ProviderCache(db).get(provider_id)
    assert provider is not None
    ingest = Ingest(db, writers=1)
    commits = 0

    def on_commit(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    sa_event.listen(db.engine.sync_engine, "commit", on_commit)
    try:
        deliveries = [events(sendgrid_event("delivered", i, sg_message_id=f"m{i}.f")) for i in range(40)]
        # the same event as the first delivery, in a later delivery of the same burst
        deliveries.append(events(sendgrid_event("delivered", 0, sg_message_id="m0.f")))
        results = await asyncio.gather(*(ingest.submit(provider, d) for d in deliveries))
    finally:
        sa_event.remove(db.engine.sync_engine, "commit", on_commit)
    assert [r.recorded for r in results] == [1] * 40 + [0]
    assert [r.status_changes for r in results] == [1] * 40 + [0]
    assert results[-1].duplicates == 1
    assert commits < 10, commits  # 41 deliveries, a handful of transactions
    async with db.transaction() as s:
        assert (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one() == 40
        assert (await s.execute(select(func.count()).select_from(Event))).scalar_one() == 40


async def test_a_failing_delivery_does_not_fail_the_others(db: Database) -> None:
    provider_id = await setup(db, 3)
    provider = await ProviderCache(db).get(provider_id)
    assert provider is not None
    ingest = Ingest(db, writers=1)
    good = [events(sendgrid_event("delivered", i, sg_message_id=f"m{i}.f")) for i in range(3)]
    [template] = events(sendgrid_event("open", 9))
    # an event the database refuses to store (its id is not text)
    poison = [dataclasses.replace(template)]
    object.__setattr__(poison[0], "provider_event_id", ["not", "a", "string"])
    outcome = await asyncio.gather(
        *(ingest.submit(provider, d) for d in [good[0], poison, good[1], good[2]]), return_exceptions=True
    )
    assert isinstance(outcome[1], Exception)
    assert [getattr(r, "recorded", None) for r in (outcome[0], outcome[2], outcome[3])] == [1, 1, 1]
    async with db.transaction() as s:
        assert (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one() == 3


async def test_provider_cache_reloads_after_its_ttl_and_on_demand(db: Database) -> None:
    provider_id = await setup(db, 0)
    cache = ProviderCache(db, ttl_s=60)
    first = await cache.get(provider_id)
    async with db.transaction() as s:
        row = await s.get(Provider, provider_id)
        assert row is not None
        row.config = {"webhook_public_key": "rotated"}
    assert (await cache.get(provider_id)) is first  # still cached
    fresh = await cache.get(provider_id, max_age_s=0)
    assert fresh is not None and fresh.config == {"webhook_public_key": "rotated"}
    assert await cache.get(999_999) is None


@pytest.mark.parametrize("writers", [1, 3])
async def test_every_delivery_is_answered_whatever_the_writers(own_db: Database, writers: int) -> None:
    db = own_db
    provider_id = await setup(db, 60)
    provider = await ProviderCache(db).get(provider_id)
    assert provider is not None
    ingest = Ingest(db, writers=writers, max_batch_events=7)
    deliveries = [
        events(
            *(
                sendgrid_event(kind, i * 10 + k, sg_message_id=f"m{i}.f")
                for k, kind in enumerate(("processed", "open"))
            )
        )
        for i in range(60)
    ]
    results = await asyncio.gather(*(ingest.submit(provider, d) for d in deliveries))
    assert sum(r.recorded for r in results) == 120
    # Connections kept between batches go back once the queue is idle (the writer returns the
    # last results just before it lets go of its connection).
    for _ in range(100):
        if db.engine.pool.checkedout() == 0:
            break
        await asyncio.sleep(0.01)
    assert db.engine.pool.checkedout() == 0
    async with db.transaction() as s:
        assert (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one() == 120


@pytest.fixture
async def own_db(db_url: str) -> Any:
    """An engine of this test's own: the app's relay also uses the app's pool."""
    database = Database(db_url)
    yield database
    await database.dispose()


async def test_a_cancelled_delivery_is_dropped_and_leaves_nothing_checked_out(own_db: Database) -> None:
    db = own_db
    provider_id = await setup(db, 2)
    provider = await ProviderCache(db).get(provider_id)
    assert provider is not None
    ingest = Ingest(db, writers=1)
    first = asyncio.create_task(
        ingest.submit(provider, events(sendgrid_event("open", 1, sg_message_id="m0.f")))
    )
    second = asyncio.create_task(
        ingest.submit(provider, events(sendgrid_event("open", 2, sg_message_id="m1.f")))
    )
    await asyncio.sleep(0)  # both queued; the first holds the writer slot
    second.cancel()
    assert (await first).recorded == 1
    with pytest.raises(asyncio.CancelledError):
        await second
    assert db.engine.pool.checkedout() == 0
    async with db.transaction() as s:
        assert (await s.execute(select(func.count()).select_from(MessageEvent))).scalar_one() == 1

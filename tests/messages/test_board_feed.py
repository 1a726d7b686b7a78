"""`board.counters` events: one producer per deployment, at most one a second per workspace, none
while nothing changes; the board's watchers add no counter queries."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import event as sa_event
from sqlalchemy import select

from server.app import create_app
from server.auth import service as auth_service
from server.contacts.models import Contact
from server.db import Database, utcnow
from server.events.models import Event
from server.messages import counters, service
from server.templates import render
from tests.conftest import make_settings, until


async def _workspace(db: Database, name: str = "Feed") -> tuple[int, Contact]:
    async with db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name=name)
        c = Contact(workspace_id=ws.id, name="Ada", email="ada@example.test", tags=[], attributes={})
        s.add(c)
        await s.flush()
        return ws.id, c


async def _create(db: Database, workspace_id: int, contact: Contact, n: int = 1) -> None:
    compiled = render.compile_message("Hi", "Hello {{ name }}")
    now = utcnow()
    async with db.transaction() as s:
        await service.record_created(
            s,
            workspace_id,
            [
                service.build_message(
                    workspace_id=workspace_id,
                    contact=contact,
                    channel="email",
                    compiled=compiled,
                    variables={},
                    send_at=now + dt.timedelta(days=1),  # scheduled: no dispatcher takes it
                    now=now,
                )
                for _ in range(n)
            ],
        )


async def _counter_events(db: Database, workspace_id: int) -> list[Event]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(Event)
            .where(Event.workspace_id == workspace_id, Event.type == "board.counters")
            .order_by(Event.id)
        )
        return list(rows.scalars())


async def test_counters_events_come_at_most_once_a_second_and_not_when_nothing_changes(app: Any) -> None:
    db: Database = app.state.services.db
    workspace_id, contact = await _workspace(db)
    started = time.monotonic()
    while time.monotonic() - started < 3.5:  # many changes, continuously
        await _create(db, workspace_id, contact)
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.5)  # the last changes are folded
    during = await _counter_events(db, workspace_id)
    assert 1 <= len(during) <= 5, len(during)  # ~3.5 s of changes: at most one event a second
    gaps = [(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(during)]
    assert min(gaps) >= 0.8, gaps  # one feed round a second (the clock of `ts` is the same process)
    async with db.transaction() as s:
        now = await counters.window(s, workspace_id=workspace_id)
    assert during[-1].data == {
        "window": "24h",
        "by_status": now["by_status"],
        "by_channel": now["by_channel"],
    }
    assert now["by_status"]["scheduled"] == now["total"] > 10

    await asyncio.sleep(2.5)  # nothing changes: no event
    assert len(await _counter_events(db, workspace_id)) == len(during)


async def test_two_app_instances_have_one_producer(pg_url: str, redis_url: str) -> None:
    prefix = f"sbt{uuid.uuid4().hex[:6]}:"
    apps = [create_app(make_settings(pg_url, redis_url=redis_url, redis_prefix=prefix)) for _ in range(2)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        feeds = [a.state.services.board_feed for a in apps]
        db: Database = apps[0].state.services.db
        workspace_id, contact = await _workspace(db)
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            await _create(db, workspace_id, contact)
            await asyncio.sleep(0.05)
        await until(lambda: sum(f.emitted for f in feeds) >= 2, what="counters events")
        assert sorted(f.emitted > 0 for f in feeds) == [False, True]  # one producer
        elapsed = time.monotonic() - started + 1
        assert len(await _counter_events(db, workspace_id)) <= elapsed + 1


async def test_watching_agents_add_no_counter_queries(app: Any, make_client: Any) -> None:
    """Ten long-poll watchers and one: the same counter statements (the feed's), each watcher
    gets the event, and nothing groups over `message`."""
    services = app.state.services
    db: Database = services.db
    workspace_id, contact = await _workspace(db, "Acme")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        per_round: dict[int, int] = {}
        for watchers in (1, 10):
            clients: list[httpx.AsyncClient] = [await make_client("agent") for _ in range(watchers)]
            head = (await clients[0].get("/api/v1/events", params={"topics": "board", "timeout": 0})).json()
            await asyncio.sleep(1.2)  # a feed round with nothing to do
            statements.clear()
            polls = [
                asyncio.create_task(
                    c.get(
                        "/api/v1/events",
                        params={"topics": "board", "after": head["last_id"], "timeout": 10},
                    )
                )
                for c in clients
            ]
            await asyncio.sleep(0.3)
            await _create(db, workspace_id, contact, n=5)
            answers = await asyncio.gather(*polls)
            await asyncio.sleep(1.5)  # the feed's round after the change has surely run
            for r in answers:
                assert r.status_code == 200
            got = [e for r in answers for e in r.json()["events"]]
            assert {e["type"] for e in got} >= {"message.created"}
            # The counters' read (the feed's fold runs every second whatever happens: not counted).
            per_round[watchers] = sum("message_count" in st and "UNION ALL" in st for st in statements)
            assert not [st for st in statements if "GROUP BY" in st and "FROM message " in st + " "]
            # Each watcher then also receives the counters event.
            later = await asyncio.gather(
                *(
                    c.get(
                        "/api/v1/events",
                        params={"topics": "board", "after": head["last_id"], "timeout": 5},
                    )
                    for c in clients
                )
            )
            for r in later:
                assert "board.counters" in {e["type"] for e in r.json()["events"]}
        assert per_round[10] == per_round[1] == 1, per_round  # one read per change, not per watcher
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", seen)

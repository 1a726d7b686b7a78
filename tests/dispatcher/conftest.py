"""Fixtures for the dispatcher: a seeded workspace, providers and messages written straight to the
database (as the messages API writes them), a local sink standing in for the provider's API, and a
factory of running dispatchers that are stopped at the end of the test."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import insert, select

from bench.dispatch.sink import Responder, Sink
from server.db import Database, utcnow
from server.messages.dispatcher import Dispatcher
from server.messages.models import Message, MessageEvent, Suppression
from server.messages.wake import notify_dispatch
from server.providers.models import Provider
from server.services import Services
from server.workspaces.models import Workspace
from tests.conftest import make_settings


@dataclass
class World:
    """One migrated database with a workspace, and helpers to fill it."""

    db: Database
    url: str
    workspace_id: int

    async def provider(
        self,
        sink_url: str,
        *,
        channel: str = "email",
        priority: int = 10,
        send_rate: float | None = None,
        name: str | None = None,
        workspace_id: int | None = None,
    ) -> int:
        """A sandbox provider whose every send is first POSTed to `sink_url` (webhooks off)."""
        async with self.db.transaction() as s:
            p = Provider(
                workspace_id=workspace_id or self.workspace_id,
                name=name or f"sandbox-{priority}",
                kind="sandbox",
                channel=channel,
                priority=priority,
                config={"delivery_delay_ms": -1, "sink_url": sink_url},
                webhook_key=secrets.token_hex(16),
                send_rate=send_rate,
            )
            s.add(p)
            await s.flush()
            return p.id

    async def messages(
        self,
        n: int = 1,
        *,
        to: str | Callable[[int], str] = "ada@example.test",
        channel: str = "email",
        send_at: dt.datetime | None = None,
        workspace_id: int | None = None,
    ) -> list[int]:
        now = utcnow()
        at = send_at or now
        status = "scheduled" if at > now else "queued"
        rows = [
            {
                "workspace_id": workspace_id or self.workspace_id,
                "channel": channel,
                "to_address": to(i) if callable(to) else to,
                "subject": f"Hello {i}",
                "body": f"Body {i}",
                "variables": {},
                "send_at": at,
                "next_attempt_at": at,
                "status": status,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
        ]
        async with self.db.transaction() as s:
            ids = list((await s.execute(insert(Message).returning(Message.id), rows)).scalars())
            await notify_dispatch(s)
        return sorted(ids)

    async def suppress(self, address: str, reason: str = "bounce") -> None:
        async with self.db.transaction() as s:
            s.add(Suppression(workspace_id=self.workspace_id, address=address, reason=reason))

    async def get(self, message_id: int) -> Message:
        async with self.db.sessions() as s:
            return (await s.execute(select(Message).where(Message.id == message_id))).scalar_one()

    async def history(self, message_id: int) -> list[str]:
        async with self.db.sessions() as s:
            rows = await s.execute(
                select(MessageEvent.status)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.id)
            )
            return list(rows.scalars())

    async def statuses(self) -> dict[str, int]:
        from sqlalchemy import func

        async with self.db.sessions() as s:
            rows = await s.execute(select(Message.status, func.count()).group_by(Message.status))
            return dict(rows.all())


async def new_workspace(db: Database, name: str) -> int:
    async with db.transaction() as s:
        ws = Workspace(name=name)
        s.add(ws)
        await s.flush()
        return ws.id


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    db = Database(db_url)
    try:
        yield World(db, db_url, await new_workspace(db, "Acme"))
    finally:
        await db.dispose()


@pytest.fixture
async def pg_world(pg_url: str) -> AsyncIterator[World]:
    db = Database(pg_url)
    try:
        yield World(db, pg_url, await new_workspace(db, "Acme"))
    finally:
        await db.dispose()


SinkFactory = Callable[..., Awaitable[Sink]]


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    sinks: list[Sink] = []

    async def factory(respond: Responder | None = None) -> Sink:
        sink = await Sink(respond).start()
        sinks.append(sink)
        return sink

    yield factory
    for sink in sinks:
        await sink.close()


DispatcherFactory = Callable[..., Awaitable[Dispatcher]]

# Fast retries and polls, so behaviour shows within a test's second or two.
FAST = {
    "retry_base_s": 0.05,
    "retry_max_s": 1.0,
    "dispatcher_poll_s": 0.2,
    "circuit_failures": 3,
    "circuit_reset_s": 30.0,
}


@pytest.fixture
async def make_dispatcher() -> AsyncIterator[DispatcherFactory]:
    """`await make_dispatcher(world, **settings)` → a started dispatcher with its own Services."""
    running: list[tuple[Dispatcher, Services]] = []

    async def factory(
        world: World, redis_url: str | None = None, adapters: Any = None, **overrides: Any
    ) -> Dispatcher:
        settings = make_settings(world.url, redis_url=redis_url, **{**FAST, **overrides})
        services = Services.create(settings)
        dispatcher = Dispatcher(services, adapters=adapters) if adapters else Dispatcher(services)
        await dispatcher.start()
        running.append((dispatcher, services))
        return dispatcher

    yield factory
    for dispatcher, services in running:
        await dispatcher.stop()
        await services.stop()
    for dispatcher, _ in running:
        assert dispatcher.error is None, f"dispatcher failed: {dispatcher.error!r}"


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 10.0, every: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.db import Database
from tests.conftest import until
from tests.realtime.clients import Client
from tests.realtime.conftest import RedisServer, seed, write

pytestmark = pytest.mark.redis


async def test_an_event_written_through_one_instance_reaches_clients_of_another(
    db: Database, start_app, redis_server: RedisServer
) -> None:
    s = await seed(db)
    async with (
        start_app(redis_url=redis_server.url, prefix="sbt-two:") as one,
        start_app(redis_url=redis_server.url, prefix="sbt-two:") as two,
        httpx.AsyncClient(base_url=two.http, headers={"authorization": f"Bearer {s.ws}:{s.user}"}) as http,
    ):
        ws = await Client.open(two.ws(s.ws, s.user))
        await ws.subscribe(["board"], None)
        poll = asyncio.create_task(http.get("/api/v1/events", params={"topics": "board", "timeout": 20}))
        await asyncio.sleep(0.3)
        ids = []
        for _ in range(20):
            ids += await write(db, s.ws, 1)
            one.rt.poke()
        got = await ws.events_until(ids[-1])
        assert [e["id"] for e in got] == ids
        assert (await poll).json()["events"][0]["id"] == ids[0]
        # Exactly one relay holds the lease and publishes every row. It may lag the clients: a hub's
        # sweep reads the log too, and on a stalled machine it can deliver all 20 first.
        relays = [one.rt.relay, two.rt.relay]
        await until(lambda: max(r.published for r in relays) >= len(ids), what="the leader publishing all")
        assert min(r.published for r in relays) == 0
        await ws.close()


async def test_many_clients_subscribing_at_once_all_receive(
    db: Database, start_app, redis_server: RedisServer
) -> None:
    s = await seed(db)
    async with start_app(redis_url=redis_server.url) as app:
        clients = await asyncio.gather(*(Client.open(app.ws(s.ws, s.user)) for _ in range(200)))
        await asyncio.gather(*(c.subscribe(["board"], None) for c in clients))
        [one] = await write(db, s.ws, 1)
        got = await asyncio.gather(*(c.events_until(one) for c in clients))
        assert all([e["id"] for e in g] == [one] for g in got)
        await asyncio.gather(*(c.close() for c in clients))


async def test_a_redis_restart_mid_stream_loses_nothing(db: Database, start_app) -> None:
    redis = RedisServer()
    redis.start()
    try:
        s = await seed(db)
        async with start_app(redis_url=redis.url) as app:
            c = await Client.open(app.ws(s.ws, s.user))
            await c.subscribe(["board"], None)
            before = await write(db, s.ws, 5)
            assert [e["id"] for e in await c.events_until(before[-1])] == before
            redis.stop()
            during = await write(db, s.ws, 5)
            await asyncio.sleep(0.5)
            redis.start()
            after = await write(db, s.ws, 5)
            got = await c.events_until(after[-1], wait_s=20)
            assert [e["id"] for e in got] == during + after
            # And a client that resumes from the start still gets everything once.
            again = await Client.open(app.ws(s.ws, s.user))
            await again.subscribe(["board"], 0)
            assert [e["id"] for e in await again.events_until(after[-1])] == before + during + after
            await c.close()
            await again.close()
    finally:
        redis.cleanup()

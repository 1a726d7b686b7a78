"""What one socket may cost: ops per socket and per user, replays, message size."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.exceptions import ConnectionClosed

from realtime.hub import LOG_READERS
from realtime.types import Caller
from server.db import Database
from server.ratelimit import Bucket, MemoryLimiter
from tests.realtime.clients import Client
from tests.realtime.conftest import seed, write
from tests.realtime.test_presence import second_user


async def frames_until_closed(c: Client, within_s: float = 10.0) -> tuple[list[dict[str, Any]], int]:
    """Every frame received until the server closes, and its close code."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within_s):
        try:
            while True:
                got.append(await c.recv(within_s))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return got, exc.rcvd.code


async def test_a_presence_flood_gets_an_error_frame_then_1008_while_another_socket_goes_on(
    db: Database, start_app
) -> None:
    s = await seed(db)
    eve = await second_user(db, s.ws)
    async with start_app(ws_ops_burst=5, ws_ops_per_s=1.0) as app:
        calm = await Client.open(app.ws(s.ws, eve))
        await calm.subscribe([f"contact:{s.contact}"], None)
        flood = await Client.open(app.ws(s.ws, s.user))
        for i in range(30):
            state = "viewing" if i % 2 else "editing"
            try:
                await flood.send(op="presence", contact_id=s.contact, state=state)
            except ConnectionClosed:
                break
        got, code = await frames_until_closed(flood)
        errors = [m for m in got if m.get("type") == "error"]
        assert errors and "Too many messages" in errors[0]["detail"]
        assert code == 1008
        # Five presence ops went through (the burst), not thirty.
        changes = await app.rt.presence.store.list(s.ws, s.contact)
        assert set(changes) <= {s.user}
        # The other socket is unaffected: it still answers and still gets events.
        await calm.send(op="ping")
        [event_id] = await write(db, s.ws, 1, contact_id=s.contact, type="contact.updated")
        msgs = await calm.events_until(event_id)
        assert msgs[-1]["id"] == event_id
        await calm.close()


async def test_the_per_user_budget_is_shared_by_the_users_sockets(db: Database, start_app) -> None:
    s = await seed(db)
    eve = await second_user(db, s.ws)
    limiter = MemoryLimiter()
    bucket = Bucket("ws_ops", 4, 0.01)

    async def budget(caller: Caller) -> bool:
        decision = await limiter.hit([(f"wsops:user:{caller.user_id}", bucket)])
        return decision.allowed

    async with start_app(op_budget=budget) as app:
        first = await Client.open(app.ws(s.ws, s.user))
        second = await Client.open(app.ws(s.ws, s.user))
        others = await Client.open(app.ws(s.ws, eve))
        for c in (first, second):
            assert (await c.subscribe(["board"], None))["type"] == "subscribed"
            assert (await c.subscribe(["board"], None))["type"] == "subscribed"
        refused = await first.subscribe(["board"], None)
        assert refused["type"] == "error" and "this user" in refused["detail"]
        assert (await second.subscribe(["board"], None))["type"] == "error"
        assert (await others.subscribe(["board"], None))["type"] == "subscribed"
        for c in (first, second, others):
            await c.close()


async def test_replays_are_capped_per_socket_and_a_long_one_answers_resync(db: Database, start_app) -> None:
    s = await seed(db)
    ids = await write(db, s.ws, 30)
    async with start_app(ws_replays_per_min=2, ws_replay_max_events=20) as app:
        c = await Client.open(app.ws(s.ws, s.user))
        # Further back than ws_replay_max_events: resync, and no replay read.
        assert await c.subscribe(["board"], ids[0]) == {"type": "resync"}
        after = ids[-5]
        for _ in range(2):
            assert (await c.subscribe(["board"], after))["type"] == "subscribed"
            assert [e["id"] for e in await c.events_until(ids[-1])] == ids[-4:]
        # A third replay within the minute is refused; live subscribing (no replay) still works.
        refused = await c.subscribe(["board"], after)
        assert refused["type"] == "error" and "Too many replays" in refused["detail"]
        assert (await c.subscribe(["board"], None))["type"] == "subscribed"
        # ... and insisting closes the socket.
        for _ in range(4):
            await c.send(op="subscribe", topics=["board"], after=after)
        got, code = await frames_until_closed(c)
        assert code == 1008
        assert all(m.get("type") == "error" for m in got)


async def test_a_message_over_the_bound_is_closed_with_1009(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app(ws_max_message_bytes=4096) as app:
        c = await Client.open(app.ws(s.ws, s.user))
        await c.send(op="ping", pad="x" * 4000)
        assert (await c.recv())["type"] == "pong"
        await c.send(op="ping", pad="x" * 5000)
        _, code = await frames_until_closed(c)
        assert code == 1009


async def test_a_replay_the_database_cannot_answer_closes_that_socket_with_1013_and_no_other(
    db: Database, start_app
) -> None:
    """A full pool or a restarting database fails one op: that socket ends with 1013 ("try again
    later", the client comes back with its last id); it is not an unhandled error, and the other
    sockets go on."""
    s = await seed(db)
    ids = await write(db, s.ws, 5)
    eve = await second_user(db, s.ws)
    async with start_app() as app:
        calm = await Client.open(app.ws(s.ws, eve))
        assert (await calm.subscribe(["board"], None))["type"] == "subscribed"
        log = app.rt.log
        real = log.read_events
        failures = 0

        async def unavailable(*args: Any, **kwargs: Any) -> Any:
            nonlocal failures
            failures += 1
            raise TimeoutError("QueuePool limit reached, connection timed out")

        log.read_events = unavailable
        try:
            c = await Client.open(app.ws(s.ws, s.user))
            await c.send(op="subscribe", topics=["board"], after=ids[0])
            _, code = await frames_until_closed(c)
        finally:
            log.read_events = real
        assert failures == 1
        assert code == 1013
        # The other socket still answers and still gets events; the first one resumes once the
        # database answers again.
        await calm.send(op="ping")
        [event_id] = await write(db, s.ws, 1)
        assert (await calm.events_until(event_id))[-1]["id"] == event_id
        again = await Client.open(app.ws(s.ws, s.user))
        assert (await again.subscribe(["board"], ids[0]))["type"] == "subscribed"
        assert [e["id"] for e in await again.events_until(event_id)] == [*ids[1:], event_id]
        await again.close()
        await calm.close()


async def test_a_crowd_replaying_at_once_reads_the_log_a_few_at_a_time_and_every_socket_gets_its_events(
    db: Database, start_app
) -> None:
    """Sockets cut off together come back together: their replays from the log take at most
    `LOG_READERS` pooled connections at once (the dashboard's pages keep theirs), and each socket
    still gets every event it missed, in order."""
    s = await seed(db)
    ids = await write(db, s.ws, 5)  # written before the app starts: not in its ring, read from the log
    async with start_app() as app:
        log = app.rt.log
        real = log.read_events
        reading = peak = 0

        async def slow_read(*args: Any, **kwargs: Any) -> Any:
            nonlocal reading, peak
            reading += 1
            peak = max(peak, reading)
            try:
                await asyncio.sleep(0.05)  # long enough for the crowd to overlap
                return await real(*args, **kwargs)
            finally:
                reading -= 1

        log.read_events = slow_read
        try:
            clients = [await Client.open(app.ws(s.ws, s.user)) for _ in range(3 * LOG_READERS)]
            answers = await asyncio.gather(*(c.subscribe(["board"], ids[0]) for c in clients))
            assert {a["type"] for a in answers} == {"subscribed"}
            got = await asyncio.gather(*(c.events_until(ids[-1]) for c in clients))
        finally:
            log.read_events = real
        assert [[e["id"] for e in events] for events in got] == [ids[1:]] * len(clients)
        assert 1 < peak <= LOG_READERS
        for c in clients:
            await c.close()

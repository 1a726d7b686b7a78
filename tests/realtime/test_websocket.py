from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from realtime.subscriber import SLOW
from server.db import Database
from server.events.service import NewEvent, emit_many
from tests.realtime import rawws
from tests.realtime.clients import Client
from tests.realtime.conftest import seed, write


def ids(events: list[dict]) -> list[int]:
    return [e["id"] for e in events]


async def test_replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_writers(
    db: Database, start_app
) -> None:
    s = await seed(db)
    async with start_app() as app:
        await write(db, s.ws, 20)
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                await write(db, s.ws, 1)

        writers = [asyncio.create_task(writer()) for _ in range(4)]
        clients: list[tuple[int | None, Client]] = []
        for after in (0, 7, 19, None):
            c = await Client.open(app.ws(s.ws, s.user))
            assert await c.subscribe(["board"], after) == {"type": "subscribed", "topics": ["board"]}
            clients.append((after, c))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*writers)
        last = (await write(db, s.ws, 1))[0]
        assert last > 40
        for after, c in clients:
            got = ids(await c.events_until(last))
            first = got[0] if after is None else after + 1
            assert got == list(range(first, last + 1)), (after, got[:5])
            assert await c.nothing_for(0.1) == []
            await c.close()


async def test_resume_after_a_dropped_connection_misses_nothing(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app:
        c = await Client.open(app.ws(s.ws, s.user))
        await c.subscribe(["board"], 0)
        first = await write(db, s.ws, 5)
        seen = ids(await c.events_until(first[-1]))
        c.conn.transport.abort()  # dropped, not closed
        more = await write(db, s.ws, 7)
        again = await Client.open(app.ws(s.ws, s.user))
        await again.subscribe(["board"], seen[-1])
        assert ids(await again.events_until(more[-1])) == more
        await again.close()


async def test_a_client_sees_only_its_own_workspace(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app:
        c = await Client.open(app.ws(s.ws, s.user))
        await c.subscribe(["board", "contacts", f"contact:{s.contact}"], None)
        await write(db, s.other_ws, 2, contact_id=s.other_contact)
        await write(db, s.other_ws, 1, type="contact.updated", contact_id=s.other_contact)
        [mine] = await write(db, s.ws, 1, type="contact.updated", contact_id=s.contact)
        got = await c.events_until(mine)
        assert ids(got) == [mine] and got[0]["type"] == "contact.updated"

        await c.send(op="subscribe", topics=[f"contact:{s.other_contact}"], after=None)
        err = await c.recv()
        assert err["type"] == "error" and f"contact {s.other_contact}" in err["detail"]
        await c.send(op="subscribe", topics=["board"], after=mine + 50)
        err = await c.recv()
        assert err["type"] == "error" and "after" in err["detail"]
        await c.send(op="subscribe", topics=["everything"], after=None)
        assert (await c.recv())["type"] == "error"
        await c.close()


async def test_without_a_token_the_socket_is_refused(db: Database, start_app) -> None:
    async with start_app() as app:
        with pytest.raises(InvalidStatus) as info:
            await Client.open(f"ws://127.0.0.1:{app.port}/ws")
        assert info.value.response.status_code == 403


async def test_topic_filtering_sends_each_event_once(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app:
        c = await Client.open(app.ws(s.ws, s.user))
        await c.subscribe(["board", f"contact:{s.contact}"], None)
        a = await write(db, s.ws, 1, contact_id=s.contact)  # board and contact:N: once
        await write(db, s.ws, 1, type="contact.updated")  # neither
        b = await write(db, s.ws, 1, type="presence", contact_id=s.contact)
        got = await c.events_until(b[0])
        assert ids(got) == [a[0], b[0]]
        await c.close()


async def test_a_slow_consumer_is_cut_off_while_a_fast_one_keeps_up(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app(ws_send_buffer=512) as app:  # 128 KiB per socket, cut past 1 MiB or 1 s over
        fast = await Client.open(app.ws(s.ws, s.user))
        await fast.subscribe(["board"], None)
        reader, writer = await rawws.connect(app.port, f"/ws?token={s.ws}:{s.user}", rcvbuf=4096)
        writer.write(rawws.masked(1, orjson.dumps({"op": "subscribe", "topics": ["board"], "after": None})))
        op, body = await rawws.read_frame(reader)
        assert orjson.loads(body)["type"] == "subscribed"
        # Enough to fill the kernel's socket buffers and then ours.
        payload = {"status": "sent", "pad": "x" * 8000}
        envs = []
        for _ in range(80):
            async with db.transaction() as session:
                envs += await emit_many(session, s.ws, [NewEvent("message.status", payload)] * 10)
        got = await fast.events_until(envs[-1]["id"])
        assert ids(got) == [e["id"] for e in envs]
        # The slow socket now reads: some events, then the close frame with the reason.
        close = None
        async with asyncio.timeout(10):
            while close is None:
                op, body = await rawws.read_frame(reader)
                if op == 0x8:
                    close = body
        assert int.from_bytes(close[:2]) == 1008 and close[2:].decode() == SLOW
        writer.close()
        await fast.close()

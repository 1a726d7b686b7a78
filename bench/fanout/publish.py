"""The event source: `python -m bench.fanout.publish MODE --rates 10,50 --step-s 3 ...`.

ours         one committed event-log row per event (PostgreSQL), the relay does the rest
broadcaster  PUBLISH to the peer's Redis channel
socketio     AsyncRedisManager(write_only=True).emit(..., room="board")
Events are paced at `rate` per second per step; each carries its step and publish time."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
import uvloop

from bench.fanout.servers import event_body

Send = Callable[[int, int], Awaitable[None]]

EMIT_SQL = """
WITH seq AS (UPDATE workspace SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq),
ins AS (
  INSERT INTO event (workspace_id, id, type, contact_id, data, ts)
  SELECT $1, event_seq, 'message.status', NULL, $2::jsonb, now() FROM seq RETURNING id
)
SELECT pg_notify('switchboard_events', $1::text) FROM ins
"""


async def make_sender(args: argparse.Namespace) -> Send:
    if args.mode == "ours":
        import asyncpg

        # What `server.events.service.emit` does (id taken under the workspace row lock, row
        # inserted, NOTIFY at commit), as one statement: the publisher shares a core with the
        # load generator, and the meter starts at `t`, just before the statement is sent.
        pool = await asyncpg.create_pool(
            args.db.replace("postgresql+asyncpg", "postgresql"), min_size=8, max_size=8
        )

        async def send_ours(i: int, step: int) -> None:
            data = orjson.dumps(event_body(i, step)).decode()
            await pool.execute(EMIT_SQL, args.workspace, data)

        return send_ours
    if args.mode == "broadcaster":
        import redis.asyncio as aioredis

        client = aioredis.from_url(args.redis)
        channel = args.prefix + "board"

        async def send_broadcaster(i: int, step: int) -> None:
            env = {"id": i, "type": "message.status", "ts": "", "data": event_body(i, step)}
            await client.publish(channel, orjson.dumps(env))

        return send_broadcaster
    import socketio

    mgr = socketio.AsyncRedisManager(args.redis, channel=args.prefix + "socketio", write_only=True)

    async def send_sio(i: int, step: int) -> None:
        env = {"id": i, "type": "message.status", "ts": "", "data": event_body(i, step)}
        await mgr.emit("event", env, room="board", namespace="/")

    return send_sio


async def run(args: argparse.Namespace) -> None:
    send = await make_sender(args)
    sem = asyncio.Semaphore(8)
    tasks: set[asyncio.Task[None]] = set()
    late = 0

    async def one(i: int, step: int) -> None:
        async with sem:
            await send(i, step)

    i = 0
    for step, rate in enumerate(args.rates):
        t0 = time.monotonic()
        for k in range(int(rate * args.step_s)):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif sem.locked():
                late += 1
            i += 1
            t = asyncio.create_task(one(i, step))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    print(orjson.dumps({"published": i, "late": late}).decode(), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["ours", "broadcaster", "socketio"])
    p.add_argument("--db")
    p.add_argument("--redis")
    p.add_argument("--prefix", default="sbbench:")
    p.add_argument("--workspace", type=int, default=1)
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], required=True)
    p.add_argument("--step-s", type=float, default=3.0)
    uvloop.run(run(p.parse_args()))


if __name__ == "__main__":
    main()

"""Inbound messages benchmark: `python -m bench.inbound [--duration 8]`.

Starts a real `switchboard serve --no-worker` (pinned to core 0) on a fresh PostgreSQL database
with Redis, and loads it from core 1 with Twilio-signed, form-encoded incoming SMS webhooks
(`SmsStatus=received`, senders drawn from a pool, so most land in an existing conversation and some
make a new contact; 1 in 10 a replay), beside the Twilio status callbacks of `bench.webhooks` in the
same run. For each: the saturation rate (closed loop) and the p99 latency at half of it (open loop,
from each request's due time). Then, at that half rate, a WebSocket client subscribed to `inbox`
times each `conversation.message` event from the moment its webhook was answered.

The request builders, load loops and server process helpers are `bench.webhooks`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import asyncpg
import httpx
import websockets

from bench.webhooks.__main__ import (
    HOST,
    PG_ADMIN,
    REPLAY_EVERY,
    ROOT,
    Feed,
    World,
    _admin,
    _free_port,
    _row,
    seed,
    stop,
    wait_listening,
)
from bench.webhooks.load import Connection, Request, build, closed_loop, open_loop
from server.webhooks.verify import twilio_signature

OURS = "+15005550006"
PASSWORD = "bench-password-1"
TARGET_PER_S = 1500  # issue 16: inbound messages/s at saturation
TARGET_P99_MS = 50.0  # at half of it
TARGET_EVENT_P99_MS = 100.0  # webhook answered → event at a subscribed WebSocket client


@dataclass
class Inbound:
    """Incoming SMS requests, each with a unique `Body` (it comes back as the event's preview)."""

    world: World
    port: int
    senders: int
    n: int = 0
    bodies: list[str] = field(default_factory=list)

    def one(self) -> tuple[str, Request]:
        path = f"/webhooks/{self.world.twilio_id}"
        url = f"http://{HOST}:{self.port}{path}"
        self.n += 1
        sid = "SM" + uuid.uuid4().hex
        body = f"bench {self.n} {sid[-6:]}"
        form = {
            "AccountSid": "AC" + "0" * 32,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": f"+1666{self.n % self.senders:07d}",
            "MessageSid": sid,
            "NumMedia": "0",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": OURS,
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(self.world.twilio_token, url, form.items()),
        }
        self.bodies.append(body)
        return body, build(HOST, self.port, path, urlencode(form).encode(), headers, 1)

    def requests(self) -> Iterator[Request]:
        while True:
            _, request = self.one()
            yield request
            if self.n % REPLAY_EVERY == 0:
                yield request  # Twilio retrying: answered 200, stored once


async def add_user(db_url: str, workspace_id: int) -> str:
    from server.auth import service as auth_service
    from server.auth.models import Role
    from server.db import Database

    db = Database(db_url)
    email = f"bench-{secrets.token_hex(3)}@bench.test"
    try:
        async with db.transaction() as s:
            await auth_service.create_user(
                s, workspace_id=workspace_id, email=email, password=PASSWORD, role=Role.agent
            )
    finally:
        await db.dispose()
    return email


async def workspace_of(db_url: str, provider_id: int) -> int:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return int(await conn.fetchval("SELECT workspace_id FROM provider WHERE id = $1", provider_id))
    finally:
        await conn.close()


async def event_latency(
    port: int, token: str, feed: Inbound, *, rate: float, duration_s: float, connections: int
) -> tuple[list[float], int]:
    """Webhooks at `rate`; for each, the time from its answer to its event on a subscribed socket."""
    answered: dict[str, float] = {}
    received: dict[str, float] = {}
    async with websockets.connect(f"ws://{HOST}:{port}/ws?token={token}", max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topics": ["inbox"], "after": None}))
        while json.loads(await ws.recv()).get("type") != "subscribed":
            pass

        async def listen() -> None:
            async for frame in ws:
                msg = json.loads(frame)
                if msg.get("type") == "conversation.message":
                    received.setdefault(msg["data"]["preview"], time.perf_counter())

        listener = asyncio.create_task(listen())
        conns = [await Connection.open(HOST, port) for _ in range(connections)]
        queue: asyncio.Queue[tuple[str, Request] | None] = asyncio.Queue()

        async def sender(conn: Connection) -> None:
            while (item := await queue.get()) is not None:
                body, request = item
                if await conn.send(request) == 200:
                    answered[body] = time.perf_counter()

        workers = [asyncio.create_task(sender(c)) for c in conns]
        start = time.perf_counter()
        for i in range(int(rate * duration_s)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(feed.one())
        for _ in conns:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        deadline = time.perf_counter() + 5
        while len(received.keys() & answered.keys()) < len(answered) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        listener.cancel()
        for c in conns:
            c.close()
    latencies = [max(0.0, received[b] - answered[b]) * 1000 for b in answered if b in received]
    return sorted(latencies), len(answered) - len(latencies)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


async def run(args: argparse.Namespace, world: World, port: int, pid: int) -> list[str]:
    d, c = args.duration, args.connections
    status = Feed(world, port, pid)
    inbound = Inbound(world, port, args.senders)
    # Warm-up: connections, prepared statements, and the first contacts and conversations.
    await closed_loop(HOST, port, status.twilio(), connections=8, duration_s=1.0)
    await closed_loop(HOST, port, inbound.requests(), connections=8, duration_s=1.0)

    sat_status = await closed_loop(HOST, port, status.twilio(), connections=c, duration_s=d, server_pid=pid)
    sat_inbound = await closed_loop(
        HOST, port, inbound.requests(), connections=c, duration_s=d, server_pid=pid
    )
    half_status_rate = max(1.0, sat_status.events_per_s / 2)
    half_inbound_rate = max(1.0, sat_inbound.events_per_s / 2)
    half_status = await open_loop(
        HOST, port, status.twilio(), rate=half_status_rate, connections=c, duration_s=d, server_pid=pid
    )
    half_inbound = await open_loop(
        HOST, port, inbound.requests(), rate=half_inbound_rate, connections=c, duration_s=d, server_pid=pid
    )
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as http:
        r = await http.post("/api/v1/auth/login", json={"email": args.email, "password": PASSWORD})
        r.raise_for_status()
        token = r.json()["access_token"]
    lat, missing = await event_latency(
        port, token, inbound, rate=half_inbound_rate, duration_s=d, connections=c
    )

    rows = [
        _row("status callbacks, saturation", sat_status),
        _row(f"status callbacks @ {half_status_rate:.0f}/s (half)", half_status),
        _row("inbound SMS, saturation", sat_inbound),
        _row(f"inbound SMS @ {half_inbound_rate:.0f}/s (half)", half_inbound),
        "",
        f"inbound SMS: {sat_inbound.events_per_s:.0f}/s at saturation (target >= {TARGET_PER_S}: "
        f"{'met' if sat_inbound.events_per_s >= TARGET_PER_S else 'NOT met'}); p99 at half "
        f"{half_inbound.percentile(99):.1f} ms (target < {TARGET_P99_MS:.0f} ms: "
        f"{'met' if half_inbound.percentile(99) < TARGET_P99_MS else 'NOT met'}); status callbacks beside it: "
        f"{sat_status.events_per_s:.0f}/s, p99 at half {half_status.percentile(99):.1f} ms",
        f"conversation.message at a WebSocket client after the webhook's answer, at {half_inbound_rate:.0f}/s: "
        f"{len(lat)} events, p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {pct(lat, 100):.1f} ms "
        f"(target p99 < {TARGET_EVENT_P99_MS:.0f} ms: {'met' if pct(lat, 99) < TARGET_EVENT_P99_MS else 'NOT met'}); "
        f"{missing} never arrived",
    ]
    return rows


async def stored(db_url: str, bodies: list[str]) -> tuple[int, int]:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        n = await conn.fetchval("SELECT count(*) FROM inbound_message")
        distinct = await conn.fetchval("SELECT count(DISTINCT provider_message_id) FROM inbound_message")
    finally:
        await conn.close()
    return int(n), int(distinct)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbound", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections of the load")
    parser.add_argument(
        "--senders", type=int, default=200, help="distinct customer numbers (new ones make contacts)"
    )
    parser.add_argument("--messages", type=int, default=60_000, help="messages seeded for status callbacks")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to separate cores")
    args = parser.parse_args(argv)

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and bool(os.sched_getaffinity(0) >= {0, 1})
    name = f"sb_inbound_bench_{secrets.token_hex(4)}"
    db_url = f"postgresql+asyncpg://{PG_ADMIN['user']}@{PG_ADMIN['host']}:{PG_ADMIN['port']}/{name}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    proc: subprocess.Popen[bytes] | None = None
    try:
        from server import migrate

        migrate.upgrade(db_url)
        world = asyncio.run(seed(db_url, args.messages))
        args.email = asyncio.run(add_user(db_url, asyncio.run(workspace_of(db_url, world.twilio_id))))
        port = _free_port()
        env = {
            **os.environ,
            "SWITCHBOARD_DATABASE_URL": db_url,
            "SWITCHBOARD_REDIS_URL": args.redis,
            "SWITCHBOARD_REDIS_PREFIX": f"sbbench{secrets.token_hex(3)}:",
            "SWITCHBOARD_ENV": "development",
            "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
            "SWITCHBOARD_RATE_LIMIT_ENABLED": "false",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("SWITCHBOARD_PUBLIC_URL", None)
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-worker",
        ]
        if pin:
            cmd = ["taskset", "-c", "0", *cmd]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        wait_listening(port, proc)
        if pin:
            os.sched_setaffinity(0, {1})
        rows = asyncio.run(run(args, world, port, proc.pid))
        total, distinct = asyncio.run(stored(db_url, []))
    finally:
        if proc is not None:
            stop(proc)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    load = os.getloadavg()
    cores = "server on core 0, load on core 1" if pin else "not pinned"
    print(
        f"\nInbound SMS webhooks (Twilio-signed, form-encoded) beside Twilio status callbacks: one "
        f"`switchboard serve --no-worker` on PostgreSQL with Redis ({cores}); {args.duration:g} s per run; "
        f"{args.connections} connections; 1 request in {REPLAY_EVERY} a replay; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.\n"
    )
    print(
        "| scenario                               | requests |   events |  events/s |   req/s "
        "| p50 ms  | p99 ms  | CPU ms/req | errors |"
    )
    print("|" + "|".join("-" * w for w in (40, 10, 10, 11, 9, 9, 9, 12, 8)) + "|")
    for r in rows:
        print(r)
    ok = total == distinct
    print(
        f"\nintegrity: {total} inbound messages stored, {distinct} distinct provider ids -> {'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

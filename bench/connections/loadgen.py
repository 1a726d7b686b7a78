"""The load generator of `bench.connections`: idle WebSockets from several 127.0.0.x addresses.

`python -m bench.connections.loadgen --port P --proto ours|plain --path /ws?token=… --clients N
--sources K` raises its own file limit, opens N sockets (bench.fanout's raw RFC 6455 client,
subscribed to `board` for ours) spread over 127.0.0.2 … 127.0.0.(K+1) — one source address holds
at most one ephemeral port range of sockets to one server port — prints `READY {"accept_s": …}`,
then waits for one event on every socket and prints `{"received": …, "p50_ms": …, …}`: the
latency of each socket from the event's `t` (stamped just before it is committed) to its frame."""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import time
from array import array
from typing import Any

import orjson
import uvloop

from bench.fanout.loadgen import RX_T, Client, Stats

WAVE = 200  # handshakes in flight at once (bench.fanout's)
ATTEMPTS = 5  # a refused handshake (the server could not authenticate in time) is tried again


class Idle(Client):
    """bench.fanout's client; every socket notes when its first event arrives."""

    arrivals: array[float] = array("d")

    def on_text(self, payload: bytes) -> None:
        if not self.ready.done():
            super().on_text(payload)
            return
        m = RX_T.search(payload)
        if m is not None:
            Idle.arrivals.append(time.time() - float(m[1]))


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[Client] = []
    sources = [f"127.0.0.{2 + i}" for i in range(args.sources)]

    refused = 0

    async def one(k: int) -> None:
        nonlocal refused
        for attempt in range(ATTEMPTS):
            ready: asyncio.Future[None] = loop.create_future()
            _t, c = await loop.create_connection(
                lambda ready=ready: Idle(args.proto, args.path, args.port, stats, ready),  # type: ignore[misc]
                "127.0.0.1",
                args.port,
                local_addr=(sources[k % len(sources)], 0),
            )
            try:
                await asyncio.wait_for(ready, 60)
            except ConnectionError:
                refused += 1
                stats.closed -= 1  # not one of the sockets held
                if attempt == ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.random() * 2**attempt)
                continue
            clients.append(c)
            return

    t0 = time.monotonic()
    for start in range(0, args.clients, WAVE):
        await asyncio.gather(*(one(k) for k in range(start, min(args.clients, start + WAVE))))
    ready_line = {"accept_s": time.monotonic() - t0, "refused": refused}
    print("READY " + orjson.dumps(ready_line).decode(), flush=True)
    deadline = time.monotonic() + args.hold_s
    while time.monotonic() < deadline and len(Idle.arrivals) < args.clients:
        await asyncio.sleep(0.05)
    lat = sorted(Idle.arrivals)
    result: dict[str, Any] = {"received": len(lat), "closed": stats.closed, "cut": stats.cut}
    if lat:
        result |= {
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "max_ms": lat[-1] * 1000,
        }
    print(orjson.dumps(result).decode(), flush=True)
    for c in clients:
        c.transport.abort()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proto", choices=["ours", "plain"], default="ours")
    p.add_argument("--path", default="/ws")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--hold-s", type=float, default=120.0)
    args = p.parse_args()
    want = args.clients + 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))  # root may raise hard
    try:
        uvloop.run(run(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""The load generator: raw RFC 6455 clients on uvloop, no compression.

`python -m bench.fanout.loadgen --port P --proto ours|plain|sio --clients N --mode stream|idle|longpoll`
prints `READY` once every client is connected (and subscribed), then, in stream mode, a JSON
line of per-step counts and latencies after the events stop coming."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import socket
import struct
import sys
import time
from array import array
from typing import Any

import orjson
import uvloop

RX_STEP = re.compile(rb'"s":(\d+)')
RX_T = re.compile(rb'"t":([0-9.]+)')
SAMPLE = 10


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = (
        struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        if n < 126
        else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Stats:
    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.lat: dict[int, array[float]] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.cut = 0
        self.closed = 0
        self.clients = 0
        self.sampled = 0
        self.frames = 0  # event frames of unsampled clients
        self.last_any = 0.0

    def record(self, payload: bytes) -> None:
        m = RX_STEP.search(payload)
        t = RX_T.search(payload)
        if m is None or t is None:
            return
        now = time.time()
        step = int(m[1])
        if step not in self.count:
            self.count[step] = 0
            self.lat[step] = array("d")
            self.first[step] = now
        self.count[step] += 1
        self.lat[step].append(now - float(t[1]))
        self.last[step] = now
        self.last_any = now


class Client(asyncio.Protocol):
    def __init__(self, proto: str, path: str, port: int, stats: Stats, ready: asyncio.Future[None]) -> None:
        self.proto, self.path, self.port, self.stats, self.ready = proto, path, port, stats, ready
        self.buf = bytearray()
        # Every SAMPLE-th client reads each event's step and timestamp; the others only count
        # frames, so the generator (one core, Python) is not the thing being measured.
        stats.clients += 1
        self.sampled = stats.clients % SAMPLE == 1 or SAMPLE == 1
        if self.sampled:
            stats.sampled += 1
        self.open = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buf[:80]).decode(errors="replace")))
                self.transport.close()
                return
            del buf[: end + 4]
            self.open = True
            if self.proto == "ours":
                self.transport.write(masked(1, b'{"op":"subscribe","topics":["board"],"after":null}'))
            elif self.proto == "plain":
                self.ready.set_result(None)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            if n - pos < hl + ln:
                break
            op = buf[pos] & 0x0F
            payload = bytes(buf[pos + hl : pos + hl + ln])
            pos += hl + ln
            if op == 1:
                self.on_text(payload)
            elif op == 8:
                self.stats.cut += 1
            elif op == 9:
                self.transport.write(masked(10, payload))
        del buf[:pos]

    def on_text(self, payload: bytes) -> None:
        if not self.ready.done():
            if self.proto == "ours" and payload.startswith(b'{"type":"subscribed"'):
                self.ready.set_result(None)
                return
            if self.proto == "sio":
                if payload.startswith(b"0{"):
                    self.transport.write(masked(1, b"40"))
                elif payload.startswith(b"40"):
                    self.ready.set_result(None)
                return
        if self.proto == "sio" and payload == b"2":
            self.transport.write(masked(1, b"3"))
            return
        if self.sampled:
            self.stats.record(payload)
        else:
            self.stats.frames += 1


async def connect_all(args: argparse.Namespace, stats: Stats) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []

    async def one() -> None:
        ready: asyncio.Future[None] = loop.create_future()
        _t, c = await loop.create_connection(
            lambda: Client(args.proto, args.path, args.port, stats, ready), "127.0.0.1", args.port
        )
        clients.append(c)
        await asyncio.wait_for(ready, 30)

    for start in range(0, args.clients, 200):
        await asyncio.gather(*(one() for _ in range(min(200, args.clients - start))))
    return clients


async def longpolls(args: argparse.Namespace) -> list[Any]:
    """Send `args.clients` long-poll requests and never read: each waits in the server."""
    loop = asyncio.get_running_loop()
    socks = []
    req = (
        f"GET /api/v1/events?topics=board&timeout=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {args.token}\r\n\r\n"
    ).encode()
    for _ in range(args.clients):
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", args.port))
        await loop.sock_sendall(s, req)
        socks.append(s)
    return socks


def summary(stats: Stats) -> dict[str, Any]:
    """Per step: deliveries scaled from the sampled clients (all clients get the same events),
    and their latencies; `frames` counts what every client received, as a check."""
    scale = stats.clients / max(1, stats.sampled)
    steps: dict[str, Any] = {}
    for step, n in sorted(stats.count.items()):
        lat = sorted(stats.lat[step])
        span = max(stats.last[step] - stats.first[step], 1e-9)
        steps[str(step)] = {
            "received": round(n * scale),
            "per_s": n * scale / span,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        }
    total = stats.frames + sum(stats.count.values())
    return {"steps": steps, "cut": stats.cut, "closed": stats.closed, "frames": total}


async def run(args: argparse.Namespace) -> None:
    stats = Stats()
    if args.mode == "longpoll":
        held = await longpolls(args)
        await asyncio.sleep(1.0)
        print("READY", flush=True)
        await asyncio.sleep(args.hold_s)
        for s in held:
            s.close()
        return
    clients = await connect_all(args, stats)
    print("READY", flush=True)
    if args.mode == "idle":
        await asyncio.sleep(args.hold_s)
        return
    deadline = time.monotonic() + args.hold_s
    # Stop once events have flowed and then nothing came for `quiet_s`.
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        if stats.last_any and time.time() - stats.last_any > args.quiet_s:
            break
    print(orjson.dumps(summary(stats)).decode(), flush=True)
    for c in clients:
        c.transport.abort()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proto", choices=["ours", "plain", "sio"], default="ours")
    p.add_argument("--path", default="/ws")
    p.add_argument("--token", default="1:1")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--mode", choices=["stream", "idle", "longpoll"], default="stream")
    p.add_argument("--hold-s", type=float, default=120.0)
    p.add_argument("--quiet-s", type=float, default=3.0)
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        uvloop.run(run(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""A small HTTP/1.1 keep-alive load generator: requests are pre-built bytes, responses are read just
enough to find their status. Closed loop (as fast as the server answers) or open loop (a fixed
rate, latency measured from each request's scheduled time so a stall is not hidden)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    raw: bytes
    events: int  # provider events inside this request


def build(host: str, port: int, path: str, body: bytes, headers: dict[str, str], events: int) -> Request:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return Request(("\r\n".join(head) + "\r\n\r\n").encode() + body, events)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds
    statuses: dict[int, int] = field(default_factory=dict)
    events: int = 0
    requests: int = 0
    elapsed: float = 0.0
    server_cpu_s: float = 0.0  # CPU time the server process used during the run

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.requests if self.requests else float("nan")

    def record(self, status: int, latency: float, events: int) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(latency)
        if status == 200:
            self.events += events

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200)

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux), or 0 when it cannot be read."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: Request) -> int:
        self.writer.write(request.raw)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    host: str,
    port: int,
    requests: Iterator[Request],
    *,
    connections: int,
    duration_s: float,
    server_pid: int | None = None,
) -> Stats:
    """Each connection sends its next request as soon as the previous one is answered."""
    stats = Stats()
    conns = [await Connection.open(host, port) for _ in range(connections)]
    cpu = cpu_seconds(server_pid)
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            request = next(requests, None)
            if request is None:
                return
            t0 = time.perf_counter()
            status = await conn.send(request)
            stats.record(status, time.perf_counter() - t0, request.events)

    await asyncio.gather(*(worker(c) for c in conns))
    stats.elapsed = time.perf_counter() - start
    stats.server_cpu_s = cpu_seconds(server_pid) - cpu
    for c in conns:
        c.close()
    return stats


async def open_loop(
    host: str,
    port: int,
    requests: Iterator[Request],
    *,
    rate: float,
    connections: int,
    duration_s: float,
    server_pid: int | None = None,
) -> Stats:
    """Requests due at `rate` per second; each latency counts from when it was due."""
    stats = Stats()
    conns = [await Connection.open(host, port) for _ in range(connections)]
    queue: asyncio.Queue[tuple[float, Request] | None] = asyncio.Queue()
    cpu = cpu_seconds(server_pid)
    start = time.perf_counter()
    total = int(rate * duration_s)

    async def ticker() -> None:
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            request = next(requests, None)
            if request is None:
                break
            queue.put_nowait((due, request))
        for _ in conns:
            queue.put_nowait(None)

    async def worker(conn: Connection) -> None:
        while (item := await queue.get()) is not None:
            due, request = item
            status = await conn.send(request)
            stats.record(status, time.perf_counter() - due, request.events)

    await asyncio.gather(ticker(), *(worker(c) for c in conns))
    stats.elapsed = time.perf_counter() - start
    stats.server_cpu_s = cpu_seconds(server_pid) - cpu
    for c in conns:
        c.close()
    return stats

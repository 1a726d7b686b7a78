"""`python -m bench.dispatch`: throughput and lag of `switchboard worker` on PostgreSQL, against arq.

Scenarios (each on a fresh set of 10,000 messages, all with the same `send_at` a few seconds ahead,
so the workers are idle and listening when they fall due):
  * sandbox provider, webhooks off, no HTTP — the dispatcher's own cost (claim, history, events);
  * sandbox provider POSTing every send to a local HTTP sink (another process), with 1 and 2
    workers; duplicates and losses are counted from the sink's Idempotency-Keys;
  * 500 messages/s offered for 10 s, one worker: lag p50/p99;
  * the limit: the same POSTs through the same HTTP client from one process, with no database;
  * arq, the same number of jobs, one worker, `max_jobs` = our concurrency: a no-op job, and a job
    that makes the same POST to the sink.
Results go to stdout as a table and to `bench/results/dispatch.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "dispatch.json"
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/13")
LEAD_S = 3.0  # send_at this far ahead of the insert: workers are idle and listening when it comes


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


class Bench:
    def __init__(self, n: int, concurrency: int) -> None:
        self.n = n
        self.concurrency = concurrency
        self.dbname = f"sb_dispatcher_bench_{uuid.uuid4().hex[:8]}"
        self.dsn = f"{PG}/{self.dbname}"
        self.url = self.dsn.replace("postgresql://", "postgresql+asyncpg://")
        self.sink_proc: subprocess.Popen[bytes] | None = None
        self.sink_url = ""
        self.workspace_id = 0
        self.providers: dict[str, int] = {}

    # -- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        asyncio.run(self._create_database())
        subprocess.run(
            [sys.executable, "-c", f"from server import migrate; migrate.upgrade({self.url!r})"],
            check=True,
            cwd=ROOT,
        )
        self.sink_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.dispatch.sink"], stdout=subprocess.PIPE, cwd=ROOT
        )
        assert self.sink_proc.stdout is not None
        port = int(self.sink_proc.stdout.readline())
        self.sink_url = f"http://127.0.0.1:{port}/send"
        asyncio.run(self._seed())

    async def _create_database(self) -> None:
        admin = await asyncpg.connect(f"{PG}/postgres")
        await admin.execute(f'CREATE DATABASE "{self.dbname}"')
        await admin.close()

    async def _seed(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            self.workspace_id = await conn.fetchval(
                "INSERT INTO workspace (name, event_seq, created_at) VALUES ('Bench', 0, now()) RETURNING id"
            )
            for channel, config in (
                ("email", {"delivery_delay_ms": -1, "sink_url": self.sink_url}),
                ("sms", {"delivery_delay_ms": -1}),
            ):
                self.providers[channel] = await conn.fetchval(
                    "INSERT INTO provider (workspace_id, name, kind, channel, priority, config, webhook_key,"
                    " enabled, created_at, updated_at)"
                    " VALUES ($1, $2, 'sandbox', $3, 1, $4::jsonb, $5, true, now(), now()) RETURNING id",
                    self.workspace_id,
                    f"sandbox {channel}",
                    channel,
                    json.dumps(config),
                    secrets.token_hex(16),
                )
        finally:
            await conn.close()

    async def teardown(self) -> None:
        if self.sink_proc is not None:
            self.sink_proc.terminate()
            self.sink_proc.wait()
        admin = await asyncpg.connect(f"{PG}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        await admin.close()

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE message, message_event, event")
        await conn.execute("UPDATE workspace SET event_seq = 0")
        async with httpx.AsyncClient() as client:
            await client.post(self.sink_url.replace("/send", "/_reset"))

    async def sink_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(self.sink_url.replace("/send", "/_stats"))
            return dict(r.json())

    async def insert(
        self, conn: asyncpg.Connection, count: int, *, channel: str, send_at: dt.datetime, start: int = 0
    ) -> None:
        status = "scheduled" if send_at > dt.datetime.now(dt.UTC) else "queued"
        to = "user{}@example.test" if channel == "email" else "+1415555{:04d}"
        rows = [
            (
                self.workspace_id,
                channel,
                to.format(i % 10_000),
                "Hello",
                f"Message {i}",
                "{}",
                send_at,
                send_at,
                status,
                0,
                send_at,
                send_at,
            )
            for i in range(start, start + count)
        ]
        async with conn.transaction():
            await conn.copy_records_to_table(
                "message",
                records=rows,
                columns=[
                    "workspace_id",
                    "channel",
                    "to_address",
                    "subject",
                    "body",
                    "variables",
                    "send_at",
                    "next_attempt_at",
                    "status",
                    "attempts",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.execute("SELECT pg_notify('switchboard_dispatch', '')")

    def start_workers(self, count: int) -> list[subprocess.Popen[bytes]]:
        env = {
            **os.environ,
            "SWITCHBOARD_DATABASE_URL": self.url,
            "SWITCHBOARD_SECRET_KEY": "bench-" + "s" * 32,  # PostgreSQL refuses the development secret
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS": "true",  # the sink listens on 127.0.0.1
            "SWITCHBOARD_DISPATCHER_CONCURRENCY": str(self.concurrency),
        }
        # BENCH_PROFILE=DIR: each worker writes a cProfile to DIR (for looking into the dispatcher).
        prof = os.environ.get("BENCH_PROFILE")
        return [
            subprocess.Popen(
                [sys.executable]
                + (["-m", "cProfile", "-o", f"{prof}/worker-{i}-{time.time():.0f}.prof"] if prof else [])
                + ["-m", "server.cli", "worker"],
                env=env,
                cwd=ROOT,
            )
            for i in range(count)
        ]

    @staticmethod
    def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    # -- scenarios ---------------------------------------------------------------------------

    async def burst(self, workers: int, channel: str) -> dict[str, Any]:
        """`n` messages due at one instant; returns msgs/s and lag from the sink (or the database)."""
        conn = await asyncpg.connect(self.dsn)
        procs = self.start_workers(workers)
        try:
            await self.reset(conn)
            await asyncio.sleep(1.5)  # workers up and listening
            send_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEAD_S)
            await self.insert(conn, self.n, channel=channel, send_at=send_at)
            deadline = time.monotonic() + LEAD_S + 120
            while time.monotonic() < deadline:
                done = await conn.fetchval("SELECT count(*) FROM message WHERE status = 'sent'")
                if done >= self.n:
                    break
                await asyncio.sleep(0.25)
            rows = await conn.fetch("SELECT status, count(*) FROM message GROUP BY status")
            statuses = {r["status"]: r["count"] for r in rows}
            sent_times = await conn.fetch("SELECT sent_at FROM message WHERE sent_at IS NOT NULL")
        finally:
            self.stop_workers(procs)
            await conn.close()
        t0 = send_at.timestamp()
        result: dict[str, Any] = {"workers": workers, "messages": self.n, "statuses": statuses}
        if channel == "email":  # through the sink: its receipt time is the send time
            stats = await self.sink_stats()
            firsts = list(stats["first"].values())
            result.update(
                sink_requests=stats["requests"],
                duplicates=stats["requests"] - stats["distinct"],
                lost=self.n - stats["distinct"],
            )
        else:  # no HTTP: the time the outcome was committed
            firsts = [r["sent_at"].timestamp() for r in sent_times]
            result.update(duplicates=None, lost=self.n - statuses.get("sent", 0))
        lags = [t - t0 for t in firsts]
        span = max(firsts) - t0 if firsts else float("nan")
        result.update(
            msgs_per_s=len(firsts) / span if span else float("nan"),
            lag_p50_s=pct(lags, 50),
            lag_p99_s=pct(lags, 99),
            lag_max_s=max(lags) if lags else float("nan"),
        )
        return result

    async def offered(self, rate: int, seconds: float) -> dict[str, Any]:
        """`rate` messages/s queued for sending now, in small transactions, through the sink."""
        conn = await asyncpg.connect(self.dsn)
        procs = self.start_workers(1)
        tick = 0.02
        per_tick = max(1, round(rate * tick))
        sent_at: dict[int, float] = {}
        try:
            await self.reset(conn)
            await asyncio.sleep(1.5)
            began = time.monotonic()
            i = 0
            while time.monotonic() - began < seconds:
                await self.insert(conn, per_tick, channel="email", send_at=dt.datetime.now(dt.UTC), start=i)
                i += per_tick
                await asyncio.sleep(max(0.0, began + (i / per_tick) * tick - time.monotonic()))
            total = i
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if await conn.fetchval("SELECT count(*) FROM message WHERE status = 'sent'") >= total:
                    break
                await asyncio.sleep(0.2)
            rows = await conn.fetch("SELECT id, send_at FROM message")
            sent_at = {r["id"]: r["send_at"].timestamp() for r in rows}
        finally:
            self.stop_workers(procs)
            await conn.close()
        stats = await self.sink_stats()
        prefix = f"sb-{self.workspace_id}-"
        lags = [t - sent_at[int(k.removeprefix(prefix))] for k, t in stats["first"].items()]
        return {
            "offered_per_s": rate,
            "seconds": seconds,
            "messages": total,
            "duplicates": stats["requests"] - stats["distinct"],
            "lost": total - stats["distinct"],
            "lag_p50_s": pct(lags, 50),
            "lag_p99_s": pct(lags, 99),
            "lag_max_s": max(lags) if lags else float("nan"),
        }

    def arq(self, sink: bool) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "bench.dispatch.arq_peer", "--jobs", str(self.n), "--redis", REDIS]
        cmd += ["--max-jobs", str(self.concurrency)]
        if sink:
            asyncio.run(self._reset_sink())
            cmd += ["--sink", self.sink_url]
        out = subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT).stdout
        result: dict[str, Any] = json.loads(out)
        result["msgs_per_s"] = result["jobs"] / result["elapsed_s"]
        if sink:
            stats = asyncio.run(self.sink_stats())
            result.update(duplicates=stats["requests"] - stats["distinct"], lost=self.n - stats["distinct"])
        return result

    async def http_limit(self) -> dict[str, Any]:
        """The limit: the same POSTs with the same client and concurrency, and nothing else (no database)."""
        from server.messages.provider_pool import make_http_client

        await self._reset_sink()
        slots = asyncio.Semaphore(self.concurrency)
        body = b'{"to": "user@example.test", "subject": "Hello", "body": "Message"}'

        async def one(client: httpx.AsyncClient, i: int) -> None:
            async with slots:
                r = await client.post(self.sink_url, content=body, headers={"Idempotency-Key": f"limit-{i}"})
                r.raise_for_status()

        async with make_http_client(self.concurrency, allow_private=True) as client:  # a local sink
            began = time.perf_counter()
            await asyncio.gather(*(one(client, i) for i in range(self.n)))
            elapsed = time.perf_counter() - began
        return {"messages": self.n, "elapsed_s": elapsed, "msgs_per_s": self.n / elapsed}

    async def _reset_sink(self) -> None:
        async with httpx.AsyncClient() as client:
            await client.post(self.sink_url.replace("/send", "/_reset"))


def table(results: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ".0f") -> str:
        return "—" if v is None else format(v, spec)

    lines = [
        f"{'scenario':<44} {'msgs/s':>8} {'lag p50':>8} {'lag p99':>8} {'dups':>5} {'lost':>5}",
        "-" * 83,
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"{name:<44} {f(r.get('msgs_per_s')):>8} {f(r.get('lag_p50_s'), '.3f'):>8}"
            f" {f(r.get('lag_p99_s'), '.3f'):>8} {f(r.get('duplicates')):>5} {f(r.get('lost')):>5}"
        )
    for name, ratio in results["ratios"].items():
        lines.append(f"{name}: {ratio:.2f}x")
    return "\n".join(lines)


async def scenarios(b: Bench, offered_rate: int, offered_s: float) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    only = os.environ.get("BENCH_ONLY")  # "nohttp", "http" or "offered": one scenario, for profiling
    if only == "offered":
        runs[only] = await b.offered(offered_rate, offered_s)
        return runs
    if only:
        runs[only] = await b.burst(1, "sms" if only == "nohttp" else "email")
        return runs
    runs["switchboard, sandbox (no HTTP), 1 worker"] = await b.burst(1, "sms")
    runs["switchboard, sandbox + HTTP sink, 1 worker"] = await b.burst(1, "email")
    runs["switchboard, sandbox + HTTP sink, 2 workers"] = await b.burst(2, "email")
    runs[f"switchboard, {offered_rate} msgs/s offered, 1 worker"] = await b.offered(offered_rate, offered_s)
    runs["limit: same HTTP client and sink, no database"] = await b.http_limit()
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--offered-rate", type=int, default=500)
    p.add_argument("--offered-seconds", type=float, default=10.0)
    args = p.parse_args()
    load = os.getloadavg()  # a shared machine: other work skews every figure, so record it
    b = Bench(args.messages, args.concurrency)
    b.setup()
    try:
        runs = asyncio.run(scenarios(b, args.offered_rate, args.offered_seconds))
        if os.environ.get("BENCH_ONLY"):
            print(json.dumps(runs, indent=1, default=str))
            return
        runs["arq, no-op job, 1 worker"] = b.arq(sink=False)
        runs["arq, POST to the HTTP sink, 1 worker"] = b.arq(sink=True)
    finally:
        with suppress(Exception):
            asyncio.run(b.teardown())
    ours_noop = runs["switchboard, sandbox (no HTTP), 1 worker"]["msgs_per_s"]
    ours_sink = runs["switchboard, sandbox + HTTP sink, 1 worker"]["msgs_per_s"]
    results = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": load,
        },
        "messages": args.messages,
        "concurrency": args.concurrency,
        "runs": runs,
        "ratios": {
            "switchboard / arq (no-op send)": ours_noop / runs["arq, no-op job, 1 worker"]["msgs_per_s"],
            "switchboard / HTTP limit (POST to sink)": ours_sink
            / runs["limit: same HTTP client and sink, no database"]["msgs_per_s"],
            "switchboard / arq (POST to sink)": ours_sink
            / runs["arq, POST to the HTTP sink, 1 worker"]["msgs_per_s"],
        },
        "command": "python -m bench.dispatch",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    print(f"load average at start: {load[0]:.1f} (2 cores: above ~2 the figures are pessimistic)")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

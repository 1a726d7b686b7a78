"""Inbound webhook benchmark: `python -m bench.webhooks [--duration 8]`.

Starts one Switchboard web process (uvicorn, uvloop, httptools, pinned to core 0) on a fresh
PostgreSQL database and, in the same run, a bare Starlette endpoint that only answers 200. A load
generator on core 1 posts signed Twilio status callbacks (one event each) and signed SendGrid
batches, 1 request in 10 a replay of an earlier one. It prints events/s and latency for each, our
ratio to the bare endpoint, latency at half the target rate, and then checks the database: every
event recorded once, every message delivered, no status change logged twice.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.webhooks.load import Request, Stats, build, closed_loop, open_loop
from server.webhooks.verify import twilio_signature

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
TARGET_EVENTS_PER_S = 1500
REPLAY_EVERY = 10  # one request in ten is a provider retry of an earlier one
PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}


@dataclass
class World:
    db_url: str
    twilio_id: int
    twilio_token: str
    sendgrid_id: int
    sendgrid_key: ec.EllipticCurvePrivateKey
    twilio_sids: list[str]
    sendgrid_ids: list[str]


# --- database ----------------------------------------------------------------------------------


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(**PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def seed(db_url: str, messages: int) -> World:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        ws = await conn.fetchval(
            "INSERT INTO workspace (name, slug, event_seq, created_at) VALUES ('bench', 'bench', 0, now()) RETURNING id"
        )
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token = secrets.token_hex(16)
        ids = {}
        for kind, channel, config in [
            (
                "twilio",
                "sms",
                {"auth_token": token, "account_sid": "AC" + "0" * 32, "from_number": "+15005550006"},
            ),
            ("sendgrid", "email", {"webhook_public_key": base64.b64encode(public).decode()}),
        ]:
            ids[kind] = await conn.fetchval(
                "INSERT INTO provider (workspace_id, name, kind, channel, priority, config, webhook_key, enabled,"
                " created_at, updated_at) VALUES ($1, $2, $2, $3, 1, $4::jsonb, $5, true, now(), now()) RETURNING id",
                ws,
                kind,
                channel,
                json.dumps(config),
                secrets.token_hex(16),
            )
        sids = [f"SM{secrets.token_hex(16)}" for _ in range(messages)]
        sg_ids = [
            secrets.token_urlsafe(16).replace("-", "x").replace("_", "y").replace(".", "z")
            for _ in range(messages)
        ]
        rows = [(ws, "sms", f"+1555{i:07d}", "twilio", ids["twilio"], sid) for i, sid in enumerate(sids)]
        rows += [
            (ws, "email", f"user{i}@bench.test", "sendgrid", ids["sendgrid"], m) for i, m in enumerate(sg_ids)
        ]
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "message",
            records=[(*r, "", "", "{}", "sending", 1, now, now, now, now) for r in rows],
            columns=[
                "workspace_id",
                "channel",
                "to_address",
                "provider_kind",
                "provider_id",
                "provider_message_id",
                "subject",
                "body",
                "variables",
                "status",
                "attempts",
                "send_at",
                "next_attempt_at",
                "created_at",
                "updated_at",
            ],
        )
        await conn.execute("ANALYZE message")
    finally:
        await conn.close()
    return World(db_url, ids["twilio"], token, ids["sendgrid"], key, sids, sg_ids)


# --- what the providers send ----------------------------------------------------------------


@dataclass
class Feed:
    """Hands out requests for messages not used yet; remembers every distinct event it posted."""

    world: World
    port: int
    pid: int | None = None  # the server's, to measure its CPU time
    posted: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)  # provider message ids sent a "delivered"
    cursor: int = 0

    def twilio(self, provider_id: int | None = None) -> Iterator[Request]:
        pid = provider_id or self.world.twilio_id
        path = f"/webhooks/{pid}"
        url = f"http://{HOST}:{self.port}{path}"
        previous: Request | None = None
        n = 0
        while self.cursor < len(self.world.twilio_sids):
            sid = self.world.twilio_sids[self.cursor]
            self.cursor += 1
            for status in ("sent", "delivered"):
                form = {
                    "AccountSid": "AC" + "0" * 32,
                    "ApiVersion": "2010-04-01",
                    "From": "+15005550006",
                    "MessageSid": sid,
                    "MessageStatus": status,
                    "SmsSid": sid,
                    "SmsStatus": status,
                    "To": "+15550000000",
                }
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": twilio_signature(self.world.twilio_token, url, form.items()),
                }
                previous = build(HOST, self.port, path, urlencode(form).encode(), headers, 1)
                self.posted.add(f"tw:{sid}:{status}")
                if status == "delivered":
                    self.delivered.add(sid)
                yield previous
                n += 1
                if n % REPLAY_EVERY == 0:
                    yield previous

    def sendgrid(self, batch: int, provider_id: int | None = None) -> Iterator[Request]:
        pid = provider_id or self.world.sendgrid_id
        path = f"/webhooks/{pid}"
        previous: Request | None = None
        n = 0
        per_message = ("processed", "delivered", "open")
        while self.cursor < len(self.world.sendgrid_ids):
            items: list[dict[str, Any]] = []
            ts = int(time.time())
            while len(items) + len(per_message) <= batch and self.cursor < len(self.world.sendgrid_ids):
                mid = self.world.sendgrid_ids[self.cursor]
                self.cursor += 1
                for k, event in enumerate(per_message):
                    event_id = f"{mid}-{event}"
                    items.append(
                        {
                            "email": f"{mid}@bench.test",
                            "timestamp": ts + k,
                            "event": event,
                            "sg_event_id": event_id,
                            "sg_message_id": f"{mid}.filter0001.16648.5515E0B88.0",
                            "smtp-id": f"<{mid}@ismtpd>",
                            "category": ["bench"],
                        }
                    )
                    self.posted.add(f"sg:{event_id}")
                self.delivered.add(mid)
            body = json.dumps(items).encode()
            t = str(int(time.time()))
            sig = self.world.sendgrid_key.sign(t.encode() + body, ec.ECDSA(hashes.SHA256()))
            headers = {
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": t,
            }
            previous = build(HOST, self.port, path, body, headers, len(items))
            yield previous
            n += 1
            if n % REPLAY_EVERY == 0:
                yield previous


# --- processes -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(factory: str, port: int, env: dict[str, str], core: int | None) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.webhooks.apps:{factory}",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start within {timeout_s} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- checks ----------------------------------------------------------------------------------


@dataclass
class Integrity:
    posted: int
    recorded: int
    messages: int
    delivered: int
    delivered_logged: int
    doubled: int

    @property
    def ok(self) -> bool:
        return (
            self.posted == self.recorded
            and self.messages == self.delivered == self.delivered_logged
            and self.doubled == 0
        )


async def check(world: World, feed: Feed) -> Integrity:
    conn = await asyncpg.connect(world.db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM message_event WHERE provider_id = ANY($1::bigint[])",
            [world.twilio_id, world.sendgrid_id],
        )
        delivered = await conn.fetchval(
            "SELECT count(*) FROM message WHERE provider_message_id = ANY($1::text[]) AND status = 'delivered'",
            list(feed.delivered),
        )
        delivered_logged = await conn.fetchval(
            "SELECT count(*) FROM event WHERE type = 'message.status' AND data->>'status' = 'delivered'"
        )
        doubled = await conn.fetchval(
            "SELECT count(*) FROM (SELECT data->>'message_id', data->>'status' FROM event"
            " WHERE type = 'message.status' GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
    finally:
        await conn.close()
    return Integrity(len(feed.posted), recorded, len(feed.delivered), delivered, delivered_logged, doubled)


# --- the run ---------------------------------------------------------------------------------


def _row(name: str, s: Stats) -> str:
    return (
        f"| {name:<38} | {s.requests:>8} | {s.events:>8} | {s.events_per_s:>9.0f} | {s.requests_per_s:>7.0f} "
        f"| {s.percentile(50):>7.1f} | {s.percentile(99):>7.1f} | {s.cpu_ms_per_request:>9.2f} | {s.errors:>6} |"
    )


@dataclass
class Phase:
    """One provider's three runs: ours at saturation, the bare endpoint at the same load, ours at half the target."""

    name: str
    ours: Stats
    bare: Stats
    half: Stats


async def twilio_phase(args: argparse.Namespace, feed: Feed, bare_feed: Feed) -> Phase:
    d, c = args.duration, args.connections
    await closed_loop(HOST, feed.port, feed.twilio(), connections=8, duration_s=1.0)  # warm-up
    ours = await closed_loop(HOST, feed.port, feed.twilio(), connections=c, duration_s=d, server_pid=feed.pid)
    bare_feed.cursor = feed.cursor
    bare = await closed_loop(
        HOST, bare_feed.port, bare_feed.twilio(), connections=c, duration_s=d, server_pid=bare_feed.pid
    )
    rate = TARGET_EVENTS_PER_S / 2
    half = await open_loop(
        HOST, feed.port, feed.twilio(), rate=rate, connections=c, duration_s=d, server_pid=feed.pid
    )
    return Phase("twilio callbacks", ours, bare, half)


async def sendgrid_phase(args: argparse.Namespace, feed: Feed, bare_feed: Feed) -> Phase:
    d, c, b = args.duration, args.sg_connections, args.batch
    feed.cursor = bare_feed.cursor = 0  # SendGrid messages are a list of their own
    await closed_loop(HOST, feed.port, feed.sendgrid(b), connections=2, duration_s=1.0)  # warm-up
    ours = await closed_loop(
        HOST, feed.port, feed.sendgrid(b), connections=c, duration_s=d, server_pid=feed.pid
    )
    bare_feed.cursor = feed.cursor
    bare = await closed_loop(
        HOST, bare_feed.port, bare_feed.sendgrid(b), connections=c, duration_s=d, server_pid=bare_feed.pid
    )
    rate = TARGET_EVENTS_PER_S / 2 / b
    half = await open_loop(
        HOST, feed.port, feed.sendgrid(b), rate=rate, connections=c, duration_s=d, server_pid=feed.pid
    )
    return Phase(f"sendgrid batches of {b}", ours, bare, half)


def report(phases: list[Phase]) -> list[str]:
    half = TARGET_EVENTS_PER_S / 2
    rows = []
    for p in phases:
        rows.append(_row(f"{p.name}, saturation", p.ours))
        rows.append(_row("  bare Starlette endpoint, same load", p.bare))
        rows.append(_row(f"{p.name} @ {half:.0f} events/s", p.half))
    rows.append("")
    for p in phases:
        ratio = p.ours.requests_per_s / max(p.bare.requests_per_s, 1)
        rate_ok = "met" if p.ours.events_per_s >= TARGET_EVENTS_PER_S else "NOT met"
        p99 = p.half.percentile(99)
        rows.append(
            f"{p.name}: {p.ours.events_per_s:.0f} events/s (>= {TARGET_EVENTS_PER_S}: {rate_ok}), "
            f"{ratio:.1%} of the bare endpoint's requests/s; p99 at {half:.0f} events/s {p99:.1f} ms "
            f"(< 50 ms: {'met' if p99 < 50 else 'NOT met'})"
        )
    return rows


async def run_load(
    args: argparse.Namespace, world: World, servers: list[tuple[int, int]]
) -> tuple[list[str], Feed]:
    (sb_port, sb_pid), (bare_port, bare_pid) = servers
    feed, bare_feed = Feed(world, sb_port, sb_pid), Feed(world, bare_port, bare_pid)
    phases = []
    if args.only in (None, "twilio"):
        phases.append(await twilio_phase(args, feed, bare_feed))
    if args.only in (None, "sendgrid"):
        phases.append(await sendgrid_phase(args, feed, bare_feed))
    return report(phases), feed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="connections for Twilio callbacks")
    parser.add_argument("--sg-connections", type=int, default=4, help="connections for SendGrid batches")
    parser.add_argument("--batch", type=int, default=100, help="events per SendGrid batch (default 100)")
    parser.add_argument("--messages", type=int, default=60_000, help="messages seeded per provider")
    parser.add_argument(
        "--writers", type=int, default=None, help="concurrent webhook transactions (default: the app's)"
    )
    parser.add_argument(
        "--only", choices=["twilio", "sendgrid"], default=None, help="run one provider's phases"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to separate cores")
    args = parser.parse_args(argv)

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    name = f"sb_webhooks_bench_{secrets.token_hex(4)}"
    db_url = f"postgresql+asyncpg://{PG_ADMIN['user']}@{PG_ADMIN['host']}:{PG_ADMIN['port']}/{name}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from server import migrate

        migrate.upgrade(db_url)
        world = asyncio.run(seed(db_url, args.messages))
        env = {
            **os.environ,
            "SWITCHBOARD_DATABASE_URL": db_url,
            "SWITCHBOARD_ENV": "development",
            "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
            "SWITCHBOARD_RATE_LIMIT_ENABLED": "false",
            "PYTHONPATH": str(ROOT),
        }
        if args.writers:
            env["BENCH_WEBHOOK_WRITERS"] = str(args.writers)
        env.pop("SWITCHBOARD_PUBLIC_URL", None)
        env.pop("SWITCHBOARD_REDIS_URL", None)
        sb_port, bare_port = _free_port(), _free_port()
        procs = [
            start_server("switchboard", sb_port, env, 0 if pin else None),
            start_server("bare", bare_port, env, 0 if pin else None),
        ]
        for port, proc in zip((sb_port, bare_port), procs, strict=True):
            wait_listening(port, proc)
        if pin:
            os.sched_setaffinity(0, {1})
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        servers = [(sb_port, procs[0].pid), (bare_port, procs[1].pid)]
        rows, feed = asyncio.run(run_load(args, world, servers))
        integrity = asyncio.run(check(world, feed))
    finally:
        for p in procs:
            stop(p)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    cores = "server on core 0, load on core 1" if pin else "not pinned"
    print(
        f"\nInbound webhooks, one web process on PostgreSQL ({cores}); {args.duration:.0f} s per run; "
        f"1 request in {REPLAY_EVERY} is a replay; latency at {TARGET_EVENTS_PER_S // 2} events/s is an open "
        "loop (from each request's due time); CPU ms/req is the server process's own CPU time per request.\n"
    )
    print(
        "| scenario                               | requests |   events |  events/s |   req/s "
        "| p50 ms  | p99 ms  | CPU ms/req | errors |"
    )
    print("|" + "|".join("-" * w for w in (40, 10, 10, 11, 9, 9, 9, 12, 8)) + "|")
    for r in rows:
        print(r)
    print()
    print(
        f"integrity: {integrity.posted} distinct events posted, {integrity.recorded} recorded; "
        f"{integrity.messages} messages sent a 'delivered', {integrity.delivered} delivered, "
        f"{integrity.delivered_logged} 'delivered' status events; {integrity.doubled} status changes logged twice "
        f"-> {'OK' if integrity.ok else 'FAILED'}"
    )
    return 0 if integrity.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

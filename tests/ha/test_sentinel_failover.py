"""SIGKILL the Redis primary under two real `switchboard serve` processes on PostgreSQL.

Redis: a primary, a replica and three sentinels (tests/ha/sentinel.py: down-after 1 s, failover
timeout 3 s); both web processes use `SWITCHBOARD_REDIS_URL=redis+sentinel://…`. WebSocket,
long-poll and SSE clients follow `board` on both processes while messages are created through the
API at a steady rate; the primary is killed mid-stream. Asserted afterwards: every client holds
every event exactly once and in id order (each resumes with `after`/`Last-Event-ID` when cut off),
the relay lease changed hands at most once, `/readyz` went red while no primary was reachable and
green again, shared rate limits and presence work on the new primary. Printed: the time from the
kill to the first event written after it, per kind of client (p50/p99/max).

Counts are small for `make test`; `SB_HA_FULL=1` runs the issue's 200 WebSocket, 50 long-poll
and 20 SSE clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from realtime.redisconn import connect_redis
from server.messages.board_feed import INTERVAL_S
from tests.conftest import PASSWORD, PG_HOST, PG_PORT, PG_USER
from tests.ha.sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelCluster
from tests.ops.procs import ROOT, env_for, free_port, running, switchboard, wait_http

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

FULL = os.environ.get("SB_HA_FULL") == "1"
N_WS, N_POLL, N_SSE = (200, 50, 20) if FULL else (20, 5, 3)
WRITES_PER_S = 20
STEADY_S = 3.0  # writes before the kill, and again after both instances are ready
BUDGET_S = 55.0  # the whole scenario, set-up of clients to last assertion
EMAIL = "ha@sentinel.test"
LOGIN_BURST = 3


@dataclass
class Follower:
    kind: str
    ids: list[int] = field(default_factory=list)
    # (received at, event ts) per event, wall clock: the server stamps `ts` on this machine
    times: list[tuple[float, float]] = field(default_factory=list)
    reconnects: int = 0

    def take(self, envelope: dict[str, Any]) -> None:
        self.ids.append(int(envelope["id"]))
        ts = dt.datetime.fromisoformat(envelope["ts"].replace("Z", "+00:00")).timestamp()
        self.times.append((time.time(), ts))

    @property
    def last(self) -> int | None:
        return self.ids[-1] if self.ids else None

    def first_written_after(self, kill: float) -> float | None:
        """Seconds from the kill to the first event written after it reaching this client."""
        for received, ts in self.times:
            if ts > kill:
                return received - kill
        return None

    def live_again(self, kill: float, within_s: float = 0.5) -> float | None:
        """Seconds from the kill to the first event after it delivered within `within_s` of its
        creation: Redis pub/sub carries events again (the hubs' log sweep takes up to 2 s)."""
        for received, ts in self.times:
            if ts > kill and received - ts < within_s:
                return received - kill
        return None


async def follow_ws(f: Follower, url: str, after: int, stop: asyncio.Event) -> None:
    f.ids.append(after)  # removed at the end: the resume point before the first event
    while not stop.is_set():
        try:
            async with connect(url, compression=None, max_queue=None, open_timeout=5) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "topics": ["board"], "after": f.last}))
                while not stop.is_set():
                    try:
                        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    if "id" in msg:
                        f.take(msg)
                    elif msg.get("type") == "error":  # e.g. a refused subscribe: never sit silent
                        raise RuntimeError(msg)
        except (OSError, TimeoutError, Exception) as exc:  # cut off: resume with `after`
            if stop.is_set():
                return
            f.reconnects += 1
            del exc
            await asyncio.sleep(0.2)


async def follow_poll(f: Follower, http: httpx.AsyncClient, after: int, stop: asyncio.Event) -> None:
    f.ids.append(after)
    while not stop.is_set():
        try:
            r = await http.get("/api/v1/events", params={"topics": "board", "after": f.last, "timeout": 2})
            if r.status_code != 200:
                raise httpx.HTTPError(f"{r.status_code}")
            for e in r.json()["events"]:
                f.take(e)
        except httpx.HTTPError:
            f.reconnects += 1
            await asyncio.sleep(0.2)


async def follow_sse(f: Follower, http: httpx.AsyncClient, after: int, stop: asyncio.Event) -> None:
    f.ids.append(after)
    while not stop.is_set():
        try:
            headers = {"Last-Event-ID": str(f.last)}
            async with http.stream(
                "GET", "/api/v1/events/stream", params={"topics": "board"}, headers=headers
            ) as r:
                data: list[str] = []
                async for line in r.aiter_lines():
                    if stop.is_set():
                        return
                    if line.startswith("data: "):
                        data.append(line[6:])
                    elif not line and data:
                        msg = orjson.loads("".join(data))
                        data = []
                        if "id" in msg:
                            f.take(msg)
        except httpx.HTTPError:
            pass
        if not stop.is_set():
            f.reconnects += 1
            await asyncio.sleep(0.2)


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    name = f"sb_ha_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=3)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def log_head(db_url: str) -> int:
    """The last event id committed to the log (one workspace in this database)."""
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"), timeout=3)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM event"))
    finally:
        await conn.close()


async def settled_head(db_url: str) -> int:
    """The log's head once it stops growing: after the last write, the board feed still emits one
    `board.counters` event (at most a second later, led by whichever process holds the relay lease),
    and a head read before it would leave that event "extra" on every follower."""
    quiet_for = 3 * INTERVAL_S
    head, since = await log_head(db_url), time.monotonic()
    give_up = since + 20
    while time.monotonic() - since < quiet_for:
        if time.monotonic() > give_up:
            raise AssertionError(f"the event log still grows 20 s after the last write (head {head})")
        await asyncio.sleep(0.25)
        now = await log_head(db_url)
        if now != head:
            head, since = now, time.monotonic()
    return head


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"n={len(values)} p50={statistics.median(ordered):.2f}s p99={p99:.2f}s max={ordered[-1]:.2f}s"


def runs(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """(start time, status) of each run of equal statuses."""
    out: list[tuple[float, int]] = []
    for t, status in samples:
        if not out or out[-1][1] != status:
            out.append((t, status))
    return out


async def test_a_sentinel_failover_loses_no_event_and_every_redis_user_follows() -> None:
    cluster = SentinelCluster()
    async with pg_database() as db_url:
        with ExitStack() as procs:  # every process stopped before the database is dropped
            procs.callback(cluster.close)
            cluster.start()
            prefix = f"sbha:{uuid.uuid4().hex[:6]}:"
            env = env_for(
                db_url,
                SWITCHBOARD_REDIS_URL=cluster.url(),
                SWITCHBOARD_REDIS_PREFIX=prefix,
                SWITCHBOARD_RATE_LIMIT_ENABLED="true",
                SWITCHBOARD_RATE_LIMIT_LOGIN_BURST=str(LOGIN_BURST),
                # Every follower is the same user: its subscribe ops come in one burst (a team's
                # agents each have their own budget of 60).
                SWITCHBOARD_WS_USER_OPS_BURST=str(2 * (N_WS + N_POLL + N_SSE) + 60),
                SWITCHBOARD_LOG_LEVEL="WARNING",
            )
            switchboard("migrate", env=env)
            switchboard("createuser", "--workspace", "HA", "--email", EMAIL, "--password", PASSWORD, env=env)
            tmp = cluster.dir
            ports = [free_port(), free_port()]
            webs = []
            for i, port in enumerate(ports):
                argv = [str(ROOT / ".venv/bin/switchboard"), "serve", "--no-worker", "--port", str(port)]
                webs.append(procs.enter_context(running(argv, env=env, log=tmp / f"web{i}.log")))
            for proc, port in zip(webs, ports, strict=True):
                wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            async with asyncio.timeout(BUDGET_S):
                await scenario(cluster, ports, prefix, db_url)


async def scenario(cluster: SentinelCluster, ports: list[int], prefix: str, db_url: str) -> None:
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    async with httpx.AsyncClient(base_url=bases[0], timeout=10) as api:
        r = await api.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        r = await api.post("/api/v1/contacts", json={"name": "Failover", "phone": "+15550100"})
        assert r.status_code == 201, r.text
        contact_id = r.json()["id"]

        async def write() -> int:
            body = {"contact_id": contact_id, "channel": "sms", "body": "hello"}
            r = await api.post("/api/v1/messages", json=body)
            assert r.status_code == 202, r.text
            return int(r.json()["id"])

        await write()
        r = await api.get("/api/v1/events", params={"topics": "board", "after": 0, "timeout": 5})
        start = r.json()["last_id"]
        assert start > 0

        stop = asyncio.Event()
        followers: list[Follower] = []
        tasks: list[asyncio.Task[None]] = []
        clients: list[httpx.AsyncClient] = []
        auth = {"Authorization": f"Bearer {token}"}
        for i in range(N_WS):
            f = Follower("websocket")
            url = f"ws://127.0.0.1:{ports[i % 2]}/ws?token={token}"
            followers.append(f)
            tasks.append(asyncio.create_task(follow_ws(f, url, start, stop)))
        for i in range(N_POLL + N_SSE):
            http = httpx.AsyncClient(base_url=bases[i % 2], headers=auth, timeout=15)
            clients.append(http)
            f = Follower("long-poll" if i < N_POLL else "sse")
            followers.append(f)
            follow = follow_poll if i < N_POLL else follow_sse
            tasks.append(asyncio.create_task(follow(f, http, start, stop)))

        # Observers: /readyz of both processes, and who holds the relay lease (from the sentinels'
        # primary of the moment, as the processes see it).
        ready: list[list[tuple[float, int]]] = [[], []]
        holders: list[str] = []
        why_not_ready: dict[int, str] = {}
        reasons: set[str] = set()
        watcher = connect_redis(cluster.url())

        async def observe() -> None:
            async with httpx.AsyncClient(timeout=3) as h:
                while not stop.is_set():
                    for i, base in enumerate(bases):
                        try:
                            got = await h.get(f"{base}/readyz")
                            status = got.status_code
                            if status != 200:
                                why_not_ready[i] = got.text[:300]
                                reasons.add(f"web{i}: {got.json().get('checks')}")
                        except httpx.HTTPError as exc:
                            status = 0
                            why_not_ready[i] = repr(exc)
                        ready[i].append((time.time(), status))
                    try:
                        held = await watcher.get(f"{prefix}relay:lease")
                        if held is not None and (not holders or holders[-1] != held.decode()):
                            holders.append(held.decode())
                    except Exception:
                        pass  # no primary right now
                    await asyncio.sleep(0.1)

        written: list[int] = []
        write_times: list[tuple[float, float]] = []  # (done at, seconds taken)
        write_errors: list[str] = []

        async def write_one() -> None:
            t = time.monotonic()
            try:
                written.append(await write())
                write_times.append((time.time(), time.monotonic() - t))
            except (AssertionError, httpx.HTTPError) as exc:
                write_errors.append(repr(exc)[:200])

        async def writer(until: asyncio.Event) -> None:
            """WRITES_PER_S writes a second, each on its own (a slow one does not slow the rate)."""
            pending: set[asyncio.Task[None]] = set()
            while not until.is_set():
                task = asyncio.create_task(write_one())
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(1 / WRITES_PER_S)
            await asyncio.gather(*pending)

        observer = asyncio.create_task(observe())
        stop_writing = asyncio.Event()
        writing = asyncio.create_task(writer(stop_writing))
        try:
            await asyncio.sleep(STEADY_S)
            killed_at = time.time()
            cluster.kill_primary()
            # Until both processes are ready again and events flow, then steady writes once more.
            deadline = time.monotonic() + 20
            while not all(r and r[-1][0] > killed_at and r[-1][1] == 200 for r in ready):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"not ready 20 s after the kill: {[runs(r) for r in ready]}; "
                        f"sentinels name {cluster.primary()}; {why_not_ready}"
                    )
                await asyncio.sleep(0.1)
            recovered_at = time.time()
            await asyncio.sleep(STEADY_S)
            stop_writing.set()
            await writing
            assert not write_errors, write_errors[:5]  # the API writes to PostgreSQL only

            # Every client catches up to the log's head, read from the database once it is settled:
            # a process's long-poll answers what its hub has seen, which may still trail the log
            # right after the failover (a follower on the other process then has more than that
            # "head"), and the board feed's last `board.counters` event comes after the last write.
            head = await settled_head(db_url)
            caught_up_by = time.monotonic() + 20
            while any((f.last or 0) < head for f in followers):
                if time.monotonic() > caught_up_by:
                    behind = [(f.kind, f.last, f.reconnects) for f in followers if (f.last or 0) < head]
                    raise AssertionError(
                        f"{len(behind)} clients behind the head {head} 20 s after recovery "
                        f"(kind, last id, reconnects): {behind[:10]}"
                    )
                await asyncio.sleep(0.2)

            # Shared rate limits work again: the failed sign-in bucket is in Redis, so it trips.
            codes = []
            for _ in range(LOGIN_BURST + 1):
                bad = await api.post("/api/v1/auth/login", json={"email": EMAIL, "password": "wrong" * 3})
                codes.append(bad.status_code)
            # Presence works again: announced on one process, seen on the other.
            seen_url = f"ws://127.0.0.1:{ports[1]}/ws?token={token}"
            async with (
                connect(f"ws://127.0.0.1:{ports[0]}/ws?token={token}") as editor,
                connect(seen_url) as viewer,
            ):
                await viewer.send(orjson.dumps({"op": "subscribe", "topics": [f"contact:{contact_id}"]}))
                assert orjson.loads(await viewer.recv())["type"] == "subscribed"
                await editor.send(
                    orjson.dumps({"op": "presence", "contact_id": contact_id, "state": "editing"})
                )
                async with asyncio.timeout(10):
                    while True:
                        msg = orjson.loads(await viewer.recv())
                        if msg.get("type") == "presence":
                            break
                assert msg["data"]["state"] == "editing"
                presence_keys = [k async for k in watcher.scan_iter(match=f"{prefix}presence:*")]
        finally:
            stop.set()
            stop_writing.set()
            for t in [*tasks, observer, writing]:
                t.cancel()
            await asyncio.gather(*tasks, observer, writing, return_exceptions=True)
            for c in clients:
                await c.aclose()
            await watcher.aclose()

    # -- what happened ---------------------------------------------------------------------------
    expected = list(range(start + 1, head + 1))
    for f in followers:
        got = f.ids[1:]
        assert got == sorted(set(got)), f"{f.kind}: duplicates or out of order"
        assert got == expected[: len(got)] and len(got) == len(expected), (
            f"{f.kind}: {len(got)} events, expected {len(expected)}; missing "
            f"{sorted(set(expected) - set(got))[:10]}"
        )
    assert len(holders) <= 2, f"the relay lease moved more than once: {holders}"
    for i, samples in enumerate(ready):
        before = [s for t, s in samples if t < killed_at]
        after = [s for t, s in samples if t >= killed_at]
        assert before and set(before) == {200}, f"web{i} not ready before the kill: {runs(samples)}"
        assert 503 in after, f"web{i}: /readyz never went red while no primary was reachable"
        assert after[-1] == 200
    assert codes[:LOGIN_BURST] == [401] * LOGIN_BURST and codes[-1] == 429, codes
    assert presence_keys

    print(
        f"\nSentinel failover: down-after-milliseconds={DOWN_AFTER_MS} failover-timeout={FAILOVER_TIMEOUT_MS}"
    )
    print(
        f"  clients: {N_WS} WebSocket, {N_POLL} long-poll, {N_SSE} SSE; {len(written)} writes at {WRITES_PER_S}/s"
    )
    during = [took for at, took in write_times if killed_at <= at <= recovered_at]
    print(
        f"  writes while Redis had no primary: {len(during)}, slowest {max(during, default=0):.2f}s; "
        f"slowest write overall {max(t for _, t in write_times):.2f}s"
    )
    print(f"  both /readyz green again {recovered_at - killed_at:.2f}s after the kill")
    for i, samples in enumerate(ready):
        seq = ", ".join(f"{t - killed_at:+.1f}s {s}" for t, s in runs(samples))
        print(f"  web{i} /readyz: {seq}")
    for reason in sorted(reasons):
        print(f"  not ready: {reason}")
    print(f"  relay lease holders: {len(holders)}")
    for kind in ("websocket", "long-poll", "sse"):
        fs = [f for f in followers if f.kind == kind]
        firsts = [x for x in (f.first_written_after(killed_at) for f in fs) if x is not None]
        assert len(firsts) == len(fs)
        live = [x for x in (f.live_again(killed_at) for f in fs) if x is not None]
        print(
            f"  {kind:9}: kill → first event written after it {summary(firsts)}; "
            f"→ live (<0.5s) again {summary(live)}; reconnects {sum(f.reconnects for f in fs)}"
        )

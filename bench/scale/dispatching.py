"""Dispatch and board measures of bench/scale (issue 15), after the expansion-only campaign.

`dispatch()` runs, on the server `__main__` started and through its public API:
  1. a sandbox email connection (`POST /api/v1/providers`, default config: it accepts every send and
     posts its signed delivery webhooks back to the server 1.5 s later);
  2. `WATCHERS` board watchers in their own process (bench/scale/watchers.py);
  3. phase "drain": one `switchboard worker` started; the expansion-only campaign's messages (already
     queued) are sent: from the worker's start until none of them is `queued`;
  4. phase "1 worker": a second campaign to the same audience while that worker runs: from its
     `POST /api/v1/campaigns` until it is `done` expanding and none of its messages is `queued`;
  5. phase "2 workers": a second worker started (idle two seconds), then a third campaign, measured so.
During phases 4 and 5 one signed-in agent (session cookies from `POST /api/v1/auth/login`) requests
the board page `GET /` and its counters fragment `GET /board/counters` one at a time, 20 a second at
most. Between phases the bench waits (bounded) until the campaign's webhooks are in (no message of
it `queued`, `sending` or `sent`), so each phase starts quiet. Queues and webhooks are read from the
database read-only (asyncpg: an `EXISTS` on the status index every 0.1 s). A phase past `timeout_s`
ends the dispatch measures: later phases would start behind its backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench.webhooks.__main__ import HOST, stop

ROOT = Path(__file__).resolve().parents[2]
WATCHERS = 50
SETTLE_S = 180.0  # at most this long waiting for a campaign's delivery webhooks between phases
PROBE_PAUSE_S = 0.05
COUNTER_TABLES = ("message_count", "message_count_delta")


@dataclass
class Phase:
    name: str
    workers: int
    messages: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    left_queued: int = 0
    settled_s: float = 0.0
    unsettled: int = 0  # still queued, sending or sent when the settle wait gave up
    page_ms: list[float] = field(default_factory=list)
    counters_ms: list[float] = field(default_factory=list)
    watch: dict[str, float] = field(default_factory=dict)  # watcher counts over the phase
    counter_scans: int = 0  # seq + index scans of the counter tables over the phase

    @property
    def rate(self) -> float | None:
        return None if self.timed_out or not self.seconds else self.messages / self.seconds


@dataclass
class Dispatch:
    phases: list[Phase] = field(default_factory=list)
    log_lines: dict[str, int] = field(default_factory=dict)  # workers' stderr lines by level
    first_warning: str = ""

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def during(self) -> list[Phase]:
        """The end-to-end campaigns, during which the board was probed."""
        return [p for p in self.phases if p.name != "drain"]


class Stack:
    """The processes this module starts, stopped by pid (`stop`) whatever happens."""

    def __init__(self, env: dict[str, str], port: int, pin: bool) -> None:
        self.env = {**env, "SWITCHBOARD_PUBLIC_URL": f"http://{HOST}:{port}"}  # where webhooks go
        self.pin = pin and bool(shutil.which("taskset"))
        self.procs: list[subprocess.Popen[Any]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="sb-scale-workers-"))

    def worker(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "server.cli", "worker"]
        if self.pin:  # the bench's client is pinned to core 1 and children inherit it: float instead
            cmd = ["taskset", "-c", f"0-{(os.cpu_count() or 2) - 1}", *cmd]
        with open(self.logs / f"worker-{len(self.procs)}.log", "wb") as log:  # counted, not printed
            proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return proc

    def count_logs(self, out: Dispatch) -> None:
        for path in sorted(self.logs.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                level = next((w for w in ("WARNING", "ERROR", "CRITICAL") if f" {w} " in line), "other")
                out.log_lines[level] = out.log_lines.get(level, 0) + 1
                if level != "other" and not out.first_warning:
                    out.first_warning = line[:240]

    def watchers(self, port: int, token: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "bench.scale.watchers", "--url", f"ws://{HOST}:{port}/ws"]
        cmd += ["--token", token, "--clients", str(WATCHERS)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )  # on core 1, with the client (inherited)
        self.procs.append(proc)
        return proc

    def close_processes(self) -> None:
        for proc in reversed(self.procs):
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # already gone
                    proc.stdin.close()
            stop(proc)

    def remove_logs(self) -> None:
        shutil.rmtree(self.logs, ignore_errors=True)


async def _line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout_s)
    if not line:
        raise SystemExit(f"watchers exited with {proc.wait()}")
    return line.strip()


async def _mark(proc: subprocess.Popen[str]) -> dict[str, float]:
    assert proc.stdin is not None
    proc.stdin.write("mark\n")
    proc.stdin.flush()
    return dict(orjson.loads(await _line(proc, 30)))


async def _scans(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_user_tables"
            " WHERE relname = ANY($1::text[])",
            list(COUNTER_TABLES),
        )
    )


async def _probe(client: httpx.AsyncClient, done: asyncio.Event, phase: Phase) -> None:
    """One agent refreshing the board: the page, then its counters fragment, one at a time."""
    while not done.is_set():
        for path, out in (("/", phase.page_ms), ("/board/counters", phase.counters_ms)):
            t = time.perf_counter()
            r = await client.get(path)
            ms = (time.perf_counter() - t) * 1000
            if r.status_code != 200:
                raise SystemExit(f"GET {path} -> {r.status_code}: {r.text[:200]}")
            out.append(ms)
        await asyncio.sleep(PROBE_PAUSE_S)


async def _queued(conn: asyncpg.Connection, campaign_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM message WHERE status = 'queued' AND campaign_id = $1)", campaign_id
        )
    )


async def _settle(conn: asyncpg.Connection, phase: Phase, campaign_id: int) -> None:
    t = time.perf_counter()
    sql = "SELECT count(*) FROM message WHERE campaign_id = $1 AND status IN ('queued', 'sending', 'sent')"
    while (left := await conn.fetchval(sql, campaign_id)) and time.perf_counter() - t < SETTLE_S:
        await asyncio.sleep(0.5)
    phase.settled_s = time.perf_counter() - t
    phase.unsettled = int(left)


async def _run_phase(
    api: httpx.AsyncClient,
    board: httpx.AsyncClient | None,
    conn: asyncpg.Connection,
    watchers: subprocess.Popen[str],
    phase: Phase,
    *,
    t0: float,
    campaign: dict[str, Any],
    timeout_s: float,
) -> None:
    """Wait until `campaign` is expanded and none of its messages is queued; probe the board meanwhile."""
    scans, marked = await _scans(conn), await _mark(watchers)
    done = asyncio.Event()
    probe = asyncio.create_task(_probe(board, done, phase)) if board is not None else None
    try:
        while campaign["status"] == "expanding" and time.perf_counter() - t0 < timeout_s:
            await asyncio.sleep(0.1)
            campaign = (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()
        if campaign["status"] not in ("done", "expanding"):
            raise SystemExit(f"campaign ended {campaign['status']}")
        while await _queued(conn, campaign["id"]) and time.perf_counter() - t0 < timeout_s:
            await asyncio.sleep(0.1)
        phase.seconds = time.perf_counter() - t0
    finally:
        done.set()
        if probe is not None:
            await probe
    phase.messages = campaign["created"]
    if campaign["status"] == "expanding" or await _queued(conn, campaign["id"]):
        phase.timed_out = True
        phase.left_queued = int(
            await conn.fetchval(
                "SELECT count(*) FROM message WHERE status = 'queued' AND campaign_id = $1", campaign["id"]
            )
        )
    end = await _mark(watchers)
    phase.watch = {k: end[k] - marked[k] for k in ("t", "frames", "frames0", "counters0", "cuts")}
    phase.counter_scans = await _scans(conn) - scans
    if not phase.timed_out:
        await _settle(conn, phase, campaign["id"])


async def _post_campaign(api: httpx.AsyncClient, template_id: int, name: str) -> dict[str, Any]:
    r = await api.post(
        "/api/v1/campaigns", json={"name": name, "template_id": template_id, "audience": {"tag": "spring"}}
    )
    if r.status_code != 202:
        raise SystemExit(f"campaign -> {r.status_code}: {r.text[:300]}")
    return dict(r.json())


async def dispatch(
    api: httpx.AsyncClient,
    *,
    login: dict[str, str],
    token: str,
    db_url: str,
    env: dict[str, str],
    port: int,
    pin: bool,
    template_id: int,
    first_campaign: int,
    timeout_s: float,
) -> Dispatch:
    out = Dispatch()
    r = await api.post(
        "/api/v1/providers",
        json={"name": "Sandbox email", "kind": "sandbox", "channel": "email", "config": {}},
    )
    if r.status_code != 201:
        raise SystemExit(f"provider -> {r.status_code}: {r.text[:300]}")
    stack = Stack(env, port, pin)
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=60) as board:
            r = await board.post("/api/v1/auth/login", json=login)  # session cookies, as a browser
            if r.status_code != 200:
                raise SystemExit(f"board sign-in -> {r.status_code}")
            watchers = stack.watchers(port, token)
            if (ready := await _line(watchers, 90)) != "READY":
                raise SystemExit(f"watchers: {ready}")
            first = await api.get(f"/api/v1/campaigns/{first_campaign}")
            drain = Phase("drain", 1)
            out.phases.append(drain)
            t0 = time.perf_counter()
            stack.worker()
            await _run_phase(
                api, None, conn, watchers, drain, t0=t0, campaign=first.json(), timeout_s=timeout_s
            )
            for name, workers in (("1 worker", 1), ("2 workers", 2)):
                if out.phases[-1].timed_out:
                    break
                if workers == 2:
                    stack.worker()
                    await asyncio.sleep(2.0)  # started and listening, idle
                phase = Phase(name, workers)
                out.phases.append(phase)
                t0 = time.perf_counter()
                campaign = await _post_campaign(api, template_id, f"Spring, {name}")
                await _run_phase(
                    api, board, conn, watchers, phase, t0=t0, campaign=campaign, timeout_s=timeout_s
                )
    finally:
        await conn.close()
        stack.close_processes()
        stack.count_logs(out)
        stack.remove_logs()
    return out

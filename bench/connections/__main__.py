"""`python -m bench.connections`: idle WebSockets per process, ours against the bare limit.

The server runs pinned to core 0 with its file limit raised by `prlimit`; the load generators
on core 1 spread their sockets over several 127.0.0.x source addresses. Every step is bounded in
time and every process is stopped by its pid."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.fanout.__main__ import Infra, free_port, pinned, read_line, rss_kib, stop, wait_port
from bench.fanout.publish import EMIT_SQL
from bench.fanout.servers import event_body

ROOT = Path(__file__).resolve().parents[2]
SWITCHBOARD = Path(sys.executable).parent / "switchboard"
WARM = 100  # sockets opened before the RSS baseline: first-use allocations are not per socket
EMAIL, PASSWORD = "bench@connections.test", "bench-connections-password"
SOCKETS_PER_SOURCE = 20_000  # under one ephemeral port range (32768-60999) per source address


class Database(Infra):
    """bench.fanout's fresh database and redis-server, migrated by `switchboard migrate` (serve
    refuses a database not at head) with one user."""

    async def _create_db(self) -> int:
        import asyncpg

        from bench.fanout.__main__ import PG_ADMIN

        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'CREATE DATABASE "{self.db_name}"')
        await conn.close()
        env = self.env()
        for cmd in (
            ["migrate"],
            ["createuser", "--workspace", "Bench", "--email", EMAIL, "--password", PASSWORD],
        ):
            argv = [str(SWITCHBOARD), *cmd]
            await asyncio.to_thread(
                subprocess.run, argv, env=env, check=True, capture_output=True, timeout=120
            )
        conn = await asyncpg.connect(self.db_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return int(await conn.fetchval("SELECT id FROM workspace WHERE name = 'Bench'"))
        finally:
            await conn.close()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(
            SWITCHBOARD_ENV="test",
            SWITCHBOARD_DATABASE_URL=self.db_url,
            SWITCHBOARD_REDIS_URL=self.redis_url,
            SWITCHBOARD_SECRET_KEY="bench-connections-" + "s" * 32,
            # One user holds every socket here; the per-user op budget is for people, not benches.
            SWITCHBOARD_RATE_LIMIT_ENABLED="false",
            SWITCHBOARD_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        return env


def spawn(argv: list[str], core: int, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, preexec_fn=pinned(core), text=True, **kw)


@contextlib.contextmanager
def server(stack: str, infra: Database, n: int) -> Iterator[tuple[int, subprocess.Popen[str], str]]:
    """The server under test, its port and the path clients open."""
    port = free_port()
    nofile = str(n + WARM + 4096)
    if stack == "ours":
        argv = [str(SWITCHBOARD), "serve", "--no-worker", "--port", str(port)]
        env = infra.env()
    else:
        # bench.fanout's bare server writes one event (rate 1 for 1 s) once it counts N + WARM sockets.
        argv = [sys.executable, "-m", "bench.fanout.servers", "limit", "--port", str(port)]
        argv += ["--clients", str(n + WARM), "--rates", "1", "--step-s", "1"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
    if subprocess.run(
        ["prlimit", f"--nofile={nofile}:{nofile}", "--", "true"], capture_output=True
    ).returncode:
        # Past the hard limit only a process with CAP_SYS_RESOURCE may go: a container's root may not.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        raise RuntimeError(
            f"needs {nofile} open files; this machine's hard limit is {hard} and cannot be raised"
        )
    proc = spawn(
        ["prlimit", f"--nofile={nofile}:{nofile}", "--", *argv], 0, env=env, stdout=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc, timeout=60)
        path = "/"
        if stack == "ours":
            r = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}
            )
            r.raise_for_status()
            path = f"/ws?token={r.json()['access_token']}"
        time.sleep(1.0)
        yield port, proc, path
    finally:
        stop(proc)


def loadgen(port: int, proto: str, path: str, n: int, hold_s: float) -> subprocess.Popen[str]:
    sources = max(2, -(-n // SOCKETS_PER_SOURCE) + 1)
    argv = [sys.executable, "-m", "bench.connections.loadgen", "--port", str(port), "--proto", proto]
    argv += ["--path", path, "--clients", str(n), "--sources", str(sources), "--hold-s", str(hold_s)]
    return spawn(argv, 1, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))


async def commit_one_event(infra: Database) -> None:
    import asyncpg

    conn = await asyncpg.connect(infra.db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(EMIT_SQL, infra.workspace, orjson.dumps(event_body(1, 0)).decode())
    finally:
        await conn.close()


def measure(stack: str, infra: Database, n: int) -> dict[str, Any]:
    proto = "ours" if stack == "ours" else "plain"
    with server(stack, infra, n) as (port, proc, path):
        warm = loadgen(port, proto, path, WARM, 300)
        big = None
        try:
            read_line(warm, "READY", 120)
            time.sleep(1.0)
            before = rss_kib(proc.pid)
            big = loadgen(port, proto, path, n, 60)
            ready = orjson.loads(read_line(big, "READY", 60 + n / 20).split(" ", 1)[1])
            time.sleep(0.5)
            after = rss_kib(proc.pid)
            if stack == "ours":
                asyncio.run(commit_one_event(infra))
            result = orjson.loads(read_line(big, "{", 90))
            alive = proc.poll() is None
            open_after = _open_sockets(port) if stack == "ours" else None
            return {
                "kib_per_socket": (after - before) / n,
                "rss_mib": after / 1024,
                "accept_s": ready["accept_s"],
                "refused": ready["refused"],
                "open_after": open_after,
                "alive": alive,
                **result,
            }
        finally:
            stop(big)
            stop(warm)


def _open_sockets(port: int) -> int | None:
    with contextlib.suppress(httpx.HTTPError, StopIteration):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        line = next(x for x in text.splitlines() if x.startswith("switchboard_websockets_open "))
        return int(float(line.split()[1]))
    return None


def report(args: argparse.Namespace, results: dict[tuple[str, int], dict[str, Any]]) -> None:
    load = os.getloadavg()
    print(
        f"\nIdle WebSockets per process: server pinned to core 0 (file limit by prlimit), load generators on "
        f"core 1; one event to all;\nload average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"on {os.cpu_count()} cores\n"
    )
    head = f"{'stack':<7} {'sockets':>8} {'KiB/socket':>11} {'RSS MiB':>8} {'accept s':>9} {'refused':>8} {'received':>9} "
    print(head + f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'closed':>7}")
    for (stack, n), r in results.items():
        if "error" in r:
            print(f"{stack:<7} {n:>8,} failed: {r['error']}")
            continue
        print(
            f"{stack:<7} {n:>8,} {r['kib_per_socket']:>11.1f} {r['rss_mib']:>8.0f} {r['accept_s']:>9.1f} "
            f"{r['refused']:>8,} {r['received']:>9,} {r.get('p50_ms', 0):>8.0f} {r.get('p99_ms', 0):>8.0f} {r.get('max_ms', 0):>8.0f} "
            f"{r['closed']:>7}"
        )
    print(
        "\nrefused: handshakes refused and tried again (403: the server could not authenticate in time);"
        " received: sockets (of the N measured) that got the event; closed: sockets the server closed."
        " Latency is from just before the commit (ours) or the frame's build (limit) to each socket's"
        " frame, read by one Python process: at large N the load generator's own reading is part of it."
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.connections")
    p.add_argument(
        "--counts", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 25_000, 50_000]
    )
    p.add_argument("--stacks", type=lambda s: s.split(","), default=["ours", "limit"])
    args = p.parse_args()
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with Database() as infra:
        for n in args.counts:
            for stack in args.stacks:
                print(f"… {stack}: {n:,} idle sockets", file=sys.stderr, flush=True)
                try:
                    results[(stack, n)] = measure(stack, infra, n)
                except Exception as exc:
                    results[(stack, n)] = {"error": f"{exc.__class__.__name__}: {exc}"}
    report(args, results)


if __name__ == "__main__":
    main()

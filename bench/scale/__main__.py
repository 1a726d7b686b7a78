"""Scale benchmark (issue 15): `python -m bench.scale [--contacts 1000000] [--small 20000]`.

For each size (the small one first), on a fresh PostgreSQL database migrated to head: contacts
generated set-wise (`INSERT … SELECT generate_series`, bench/scale/data.py), one real
`switchboard serve` process (pinned to core 0, Redis for its events) and an admin signed in through
`POST /api/v1/auth/login`; then, one request at a time from core 1:
  * `GET /api/v1/contacts?q=` for 30 varied terms (full emails, email prefixes, name fragments,
    phone fragments, domains, extra identities, terms matching nothing, 1 or 2 letters), one pass to
    warm up and `--rounds` measured;
  * `GET /api/v1/contacts?tag=` for a common, a rare and an unused tag;
  * the contact list's first page, and a page 100 pages deep (its cursor);
  * `GET /api/v1/contacts/export?format=csv` of every contact: rows/s, and the server's RSS before,
    at its peak during, and after;
  * a marketing email campaign to the tag `spring` (1 in 5 contacts: 200,000 at 1,000,000) with a
    template that names each recipient and carries their unsubscribe link: messages/s from
    `POST /api/v1/campaigns` until `GET /api/v1/campaigns/{id}` says `done` (expansion only: the
    server runs without its worker, so the messages stay queued).
Prints one table with both sizes side by side, the ratio, and the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from bench.dispatch.run import pct
from bench.fanout.__main__ import rss_kib
from bench.scale import data
from bench.webhooks.__main__ import HOST, PG_ADMIN, _admin, _free_port, stop, wait_listening
from server.pagination import encode_cursor

ROOT = Path(__file__).resolve().parents[2]
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
EMAIL, PASSWORD = "bench@scale.test", "scale-bench-password"
PAGE = 50


def queries(n: int) -> list[str]:
    """30 search terms for a workspace of `n` generated contacts (names from data.person)."""

    def email(g: int) -> str:
        return data.person(g)[1]

    def phone(g: int) -> str:
        return data.person(g)[2]

    return [
        email(n), email(n // 2), email(n // 3),  # full emails
        email(n // 7)[:9], email(n // 11)[:12], "grace.hop", "linus.t",  # email prefixes
        "ada", "ing", "pav", "hop", "vin",  # three-letter name fragments
        data.person(n // 13)[0], data.person(n // 17)[0],  # full names
        "lovelace", "dijkstra", "okafor",  # last names
        phone(n // 5)[-7:], phone(n // 9)[2:8], "+1891", phone(n // 19),  # phone fragments and a full phone
        "corp.test", "@inbox",  # domains
        data.extra_email(50 * (n // 150)), "old1000",  # extra identities (merges leave them)
        "zzqx", "nobody@nowhere.test", "qz",  # nothing matches
        "a", "an",  # one and two letters
    ]  # fmt: skip


TAGS = ["vip", "cohort-7", "unused-tag"]


@dataclass
class Size:
    contacts: int
    build_s: float = 0.0
    search_ms: list[float] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    tag_ms: list[float] = field(default_factory=list)
    first_page_ms: list[float] = field(default_factory=list)
    deep_page_ms: list[float] = field(default_factory=list)
    export_rows: int = 0
    export_s: float = 0.0
    campaign_messages: int = 0
    campaign_s: float = 0.0
    rss_kib: tuple[int, int, int] = (0, 0, 0)  # before, peak during, after


async def _timed(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = await client.get(path, params=params)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise SystemExit(f"GET {path} {params} -> {r.status_code}: {r.text[:300]}")
    return ms, r


async def _export(client: httpx.AsyncClient, pid: int, size: Size) -> None:
    peak = before = rss_kib(pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    rows = -1  # the header
    t = time.perf_counter()
    async with client.stream("GET", "/api/v1/contacts/export", params={"format": "csv"}) as r:
        if r.status_code != 200:
            raise SystemExit(f"export -> {r.status_code}")
        async for chunk in r.aiter_raw():
            rows += chunk.count(b"\n")  # a CRLF may straddle two reads
    size.export_s = time.perf_counter() - t
    done.set()
    await sampler
    size.export_rows = rows
    size.rss_kib = (before, peak, rss_kib(pid))


async def measure(port: int, pid: int, size: Size, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=600) as client:
        r = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        if r.status_code != 200:
            raise SystemExit(f"sign-in failed: {r.status_code} {r.text[:200]}")
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        terms = queries(size.contacts)
        by_term: dict[str, float] = {}
        for round_ in range(rounds + 1):  # the first round warms caches and is not counted
            for q in terms:
                ms, _ = await _timed(client, "/api/v1/contacts", {"q": q})
                if round_:
                    size.search_ms.append(ms)
                    by_term[q] = max(by_term.get(q, 0.0), ms)
            for tag in TAGS:
                ms, _ = await _timed(client, "/api/v1/contacts", {"tag": tag})
                if round_:
                    size.tag_ms.append(ms)
        size.slowest = sorted(((ms, q) for q, ms in by_term.items()), reverse=True)[:3]
        _, first = await _timed(client, "/api/v1/contacts", {})
        newest = first.json()["items"][0]["id"]
        deep = encode_cursor(newest - 100 * PAGE)  # generated ids are consecutive
        for _ in range(20):
            size.first_page_ms.append((await _timed(client, "/api/v1/contacts", {}))[0])
            size.deep_page_ms.append((await _timed(client, "/api/v1/contacts", {"cursor": deep}))[0])
        await _export(client, pid, size)
        await _campaign(client, size)


async def _campaign(client: httpx.AsyncClient, size: Size) -> None:
    r = await client.post(
        "/api/v1/templates",
        json={
            "name": "Spring news",
            "channel": "email",
            "category": "marketing",
            "subject": "Spring news for {{ name }}",
            "body": "Hello {{ name }},\n\nour spring plans are out.\n\nUnsubscribe: {{ unsubscribe_url }}\n",
        },
    )
    if r.status_code != 201:
        raise SystemExit(f"template -> {r.status_code}: {r.text[:300]}")
    t = time.perf_counter()
    r = await client.post(
        "/api/v1/campaigns",
        json={"name": "Spring", "template_id": r.json()["id"], "audience": {"tag": "spring"}},
    )
    if r.status_code != 202:
        raise SystemExit(f"campaign -> {r.status_code}: {r.text[:300]}")
    campaign = r.json()
    while campaign["status"] == "expanding":
        await asyncio.sleep(0.05)
        campaign = (await client.get(f"/api/v1/campaigns/{campaign['id']}")).json()
    size.campaign_s = time.perf_counter() - t
    if campaign["status"] != "done":
        raise SystemExit(f"campaign ended {campaign['status']}")
    size.campaign_messages = campaign["created"]


def run_size(contacts: int, rounds: int, pin: bool) -> Size:
    size = Size(contacts)
    name = f"sb_scale_bench_{secrets.token_hex(4)}"
    db_url = f"postgresql+asyncpg://{PG_ADMIN['user']}@{PG_ADMIN['host']}:{PG_ADMIN['port']}/{name}"
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": db_url,
        "SWITCHBOARD_REDIS_URL": REDIS,
        "SWITCHBOARD_ENV": "development",
        "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
        "SWITCHBOARD_RATE_LIMIT_ENABLED": "false",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("SWITCHBOARD_PUBLIC_URL", None)
    cli = [sys.executable, "-m", "server.cli"]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([*cli, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
        subprocess.run(
            [*cli, "createuser", "--workspace", "Scale", "--email", EMAIL, "--password", PASSWORD],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        size.build_s = asyncio.run(_build(db_url, contacts))
        port = _free_port()
        cmd = [*cli, "serve", "--host", HOST, "--port", str(port), "--no-worker"]
        if pin and shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_listening(port, proc)
        asyncio.run(measure(port, proc.pid, size, rounds))
    finally:
        if proc is not None:
            stop(proc)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return size


async def _build(db_url: str, contacts: int) -> float:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        ws = await conn.fetchval("SELECT id FROM workspace WHERE name = 'Scale'")
        t = time.perf_counter()
        await data.build(conn, workspace_id=ws, contacts=contacts)
        return time.perf_counter() - t
    finally:
        await conn.close()


def table(small: Size, large: Size) -> list[str]:
    def ms(values: list[float], p: float) -> float:
        return pct(values, p)

    def mib(kib: int) -> str:
        return f"{kib / 1024:.0f}"

    rows: list[tuple[str, str, str, str, str]] = []

    def row(measure: str, a: float, b: float, target: str, spec: str = ".1f") -> None:
        ratio = f"{b / a:.1f}x" if a else "—"
        rows.append((measure, format(a, spec), format(b, spec), ratio, target))

    row("q= search p50 (ms)", ms(small.search_ms, 50), ms(large.search_ms, 50), "<= 20, <= 3x small")
    row("q= search p99 (ms)", ms(small.search_ms, 99), ms(large.search_ms, 99), "<= 100")
    row("tag= filter p50 (ms)", ms(small.tag_ms, 50), ms(large.tag_ms, 50), "")
    row(
        "contact list, first page p50 (ms)", ms(small.first_page_ms, 50), ms(large.first_page_ms, 50), "<= 20"
    )
    row(
        "contact list, 100 pages deep p50 (ms)",
        ms(small.deep_page_ms, 50),
        ms(large.deep_page_ms, 50),
        "<= 20",
    )
    row(
        "export, rows/s (CSV, every contact)",
        small.export_rows / small.export_s,
        large.export_rows / large.export_s,
        ">= 50,000",
        ",.0f",
    )
    row(
        "campaign expansion, messages/s",
        small.campaign_messages / small.campaign_s,
        large.campaign_messages / large.campaign_s,
        ">= 20,000 (200,000 recipients)",
        ",.0f",
    )
    out = [
        f"| measure | {small.contacts:,} contacts | {large.contacts:,} contacts | ratio | target |",
        "|---|---:|---:|---:|---|",
        *(f"| {' | '.join(r)} |" for r in rows),
    ]
    for s in (small, large):
        before, peak, after = s.rss_kib
        out.append(
            f"\n{s.contacts:,} contacts: built in {s.build_s:.1f} s; exported {s.export_rows:,} rows in "
            f"{s.export_s:.2f} s; campaign of {s.campaign_messages:,} messages expanded in {s.campaign_s:.1f} s; server RSS {mib(before)} MiB before, {mib(peak)} MiB peak, {mib(after)} MiB after; "
            "slowest terms (worst of the rounds): " + ", ".join(f"{q!r} {t:.0f} ms" for t, q in s.slowest)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=1_000_000, help="the large size (default 1,000,000)")
    p.add_argument("--small", type=int, default=20_000, help="the comparison size (default 20,000)")
    p.add_argument("--rounds", type=int, default=3, help="measured passes over the 30 terms (default 3)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to cores")
    args = p.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    load = os.getloadavg()
    if pin:
        os.sched_setaffinity(0, {1})
    sizes = [run_size(n, args.rounds, pin) for n in (args.small, args.contacts)]
    print(
        f"\nScale: one `switchboard serve` on PostgreSQL + Redis ({'server core 0, client core 1' if pin else 'not pinned'}); "
        f"{len(queries(args.small))} search terms x {args.rounds} rounds, one request at a time; "
        f"load average at start {load[0]:.1f}.\n"
    )
    print("\n".join(table(*sizes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

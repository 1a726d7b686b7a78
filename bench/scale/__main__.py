"""Scale benchmark (issue 15): `python -m bench.scale [--contacts 1000000] [--small 20000]`.

For each size (the small one first), on a fresh PostgreSQL database migrated to head: contacts
generated set-wise (`INSERT … SELECT generate_series`, bench/scale/data.py) and `--messages`
earlier messages (10,000,000 at 1,000,000 contacts, as many per contact at the small size; finished
statuses over the last 30 days, the board's counters filled from them: `data.build_messages`), one real
`switchboard serve` process (pinned to core 0, Redis for its events) and an admin signed in through
`POST /api/v1/auth/login`; then, one request at a time from core 1:
  * `GET /api/v1/contacts?q=` for 30 varied terms (full emails, email prefixes, name fragments,
    phone fragments, domains, extra identities, terms matching nothing, 1 or 2 letters — prefixes, not
    substrings, decision 78: a common `a`, `an` and the rare `qz`), one pass to
    warm up and `--rounds` measured;
  * `GET /api/v1/contacts?tag=` for a common, a rare and an unused tag;
  * the contact list's first page, and a page 100 pages deep (its cursor); the same for the
    message list, and its first page filtered by `status=bounced` (1 message in 20);
  * `GET /api/v1/contacts/export?format=csv` of every contact: rows/s, and the server's RSS before,
    at its peak during, and after;
  * a marketing email campaign to the tag `spring` (1 in 5 contacts: 200,000 at 1,000,000) with a
    template that names each recipient and carries their unsubscribe link: messages/s from
    `POST /api/v1/campaigns` until `GET /api/v1/campaigns/{id}` says `done` (expansion only: the
    server runs `--no-worker` and no worker runs yet, so the messages stay queued and the figure is
    the expansion's alone);
  * dispatch through real `switchboard worker` processes and a sandbox email connection created
    through the API (default config: delivery webhooks posted back to the server 1.5 s after each
    send, as the issue measured), with 50 WebSockets subscribed to `board` (bench/scale/watchers.py)
    throughout (bench/scale/dispatching.py):
      - one worker started: the expansion-only campaign's queued messages sent (from the worker's
        start, so its start-up counts) — the dispatcher's rate without expansion beside it;
      - end to end, 1 worker: a second campaign to the same audience, from its POST until it is
        `done` and none of its messages is `queued` (read-only `EXISTS` through asyncpg every 0.1 s);
        expansion and sending overlap here, as they do for a user;
      - end to end, 2 workers: a second worker started, then a third campaign, measured so;
      - during both end-to-end campaigns, one signed-in agent (session cookies) requests the board
        page `GET /` and the counters fragment `GET /board/counters` one at a time (there is no
        `/api/v1/board/counters`; the page itself never polls the fragment, it follows
        `board.counters` events): p50/p99 of each; `board.counters` and all events per second at one
        watcher; scans of the counter tables (`message_count`, `message_count_delta`) from
        `pg_stat_user_tables` — pg_stat_statements is not preloaded here — which the watchers do
        not add to (they read events, not the database);
    between phases the bench waits (at most 180 s) for the campaign's delivery webhooks; a phase
    past `--dispatch-timeout` is reported and ends the dispatch measures of that size. The workers'
    log lines are counted, not printed (the first warning is shown).
Cores: the server on core 0; this client, the watchers' process and the probe on core 1; the
workers float over both cores (`taskset -c 0-1`), as in bench/dispatch whose figure the issue compares
with: pinning two workers to one core would cap them at one core by construction. PostgreSQL and
Redis float. With `--no-pin` nothing is pinned.
Prints one table with both sizes side by side, the ratio, and the issue's targets, then notes per
size (times, webhooks, frames, cut sockets, counter-table scans, workers' warnings).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field

import asyncpg
import httpx

from bench.dispatch.run import pct
from bench.fanout.__main__ import rss_kib
from bench.scale import data
from bench.scale.dispatching import WATCHERS, Dispatch, Phase, dispatch
from bench.scale.served import served, signed_in
from server.pagination import encode_cursor

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
        "zzqx", "nobody@nowhere.test", "qz",  # nothing matches ("qz": a short term's index lookup)
        "a", "an",  # one and two letters: prefixes of a name's words, an email, a phone
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
    messages: int = 0  # generated history (data.build_messages)
    messages_build_s: float = 0.0
    msg_first_ms: list[float] = field(default_factory=list)
    msg_deep_ms: list[float] = field(default_factory=list)
    msg_status_ms: list[float] = field(default_factory=list)
    export_rows: int = 0
    export_s: float = 0.0
    campaign_messages: int = 0
    campaign_s: float = 0.0
    rss_kib: tuple[int, int, int] = (0, 0, 0)  # before, peak during, after
    dispatch: Dispatch = field(default_factory=Dispatch)


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


@dataclass
class Run:
    """Where and how the bench runs one size: the server's address and pid, its environment."""

    port: int
    pid: int
    db_url: str
    env: dict[str, str]
    pin: bool
    rounds: int
    dispatch_timeout_s: float
    reads_only: bool = False  # search, lists and export; no campaign, no dispatch


async def measure(run: Run, size: Size) -> None:
    port, pid, rounds = run.port, run.pid, run.rounds
    login = {"email": EMAIL, "password": PASSWORD}
    async with signed_in(port, EMAIL, PASSWORD) as client:
        token = str(client.headers["Authorization"]).removeprefix("Bearer ")
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
        r = await client.get("/api/v1/messages", params={"limit": str(PAGE)})
        if r.status_code != 200:
            raise SystemExit(f"messages -> {r.status_code}: {r.text[:200]}")
        items = r.json()["items"]
        if items:
            deep_msg = encode_cursor(items[0]["id"] - 100 * PAGE)  # generated ids are consecutive
            for _ in range(20):
                size.msg_first_ms.append((await _timed(client, "/api/v1/messages", {}))[0])
                size.msg_deep_ms.append((await _timed(client, "/api/v1/messages", {"cursor": deep_msg}))[0])
                size.msg_status_ms.append(
                    (await _timed(client, "/api/v1/messages", {"status": "bounced"}))[0]
                )
        await _export(client, pid, size)
        if run.reads_only:
            return
        template_id, campaign_id = await _campaign(client, size)
        size.dispatch = await dispatch(
            client,
            login=login,
            token=token,
            db_url=run.db_url,
            env=run.env,
            port=port,
            pin=run.pin,
            template_id=template_id,
            first_campaign=campaign_id,
            timeout_s=run.dispatch_timeout_s,
        )


async def _campaign(client: httpx.AsyncClient, size: Size) -> tuple[int, int]:
    """The expansion-only campaign (no worker runs yet); returns its template's id and its id."""
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
    template_id = r.json()["id"]
    t = time.perf_counter()
    r = await client.post(
        "/api/v1/campaigns",
        json={"name": "Spring", "template_id": template_id, "audience": {"tag": "spring"}},
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
    return template_id, campaign["id"]


def run_size(
    contacts: int,
    rounds: int,
    pin: bool,
    dispatch_timeout_s: float,
    reads_only: bool = False,
    messages: int = 0,
) -> Size:
    size = Size(contacts, messages=messages)

    def build(db_url: str) -> None:
        size.build_s, size.messages_build_s = asyncio.run(_build(db_url, contacts, messages))

    env = {
        "SWITCHBOARD_REDIS_URL": REDIS,
        # One sign-in serves the whole run (the board's cookie, the watchers' `?token=`): longer
        # than the run, so no access token expires in the middle of a measure.
        "SWITCHBOARD_ACCESS_TOKEN_TTL_S": str(12 * 3600),
    }
    with served(
        "sb_scale_bench",
        workspace="Scale",
        email=EMAIL,
        password=PASSWORD,
        pin=pin,
        env=env,
        before_start=build,
    ) as srv:
        run = Run(srv.port, srv.pid, srv.db_url, srv.env, pin, rounds, dispatch_timeout_s, reads_only)
        asyncio.run(measure(run, size))
    return size


async def _build(db_url: str, contacts: int, messages: int) -> tuple[float, float]:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        ws = await conn.fetchval("SELECT id FROM workspace WHERE name = 'Scale'")
        t = time.perf_counter()
        await data.build(conn, workspace_id=ws, contacts=contacts)
        built = time.perf_counter() - t
        t = time.perf_counter()
        await data.build_messages(conn, workspace_id=ws, messages=messages, contacts=contacts)
        return built, time.perf_counter() - t
    finally:
        await conn.close()


def table(small: Size, large: Size) -> list[str]:
    def ms(values: list[float], p: float) -> float:
        return pct(values, p)

    def mib(kib: int) -> str:
        return f"{kib / 1024:.0f}"

    rows: list[tuple[str, str, str, str, str]] = []

    def row(measure: str, a: float | None, b: float | None, target: str, spec: str = ".1f") -> None:
        def cell(v: float | None) -> str:
            return "—" if v is None or v != v else format(v, spec)  # v != v: NaN (no sample)

        ratio = f"{b / a:.1f}x" if a and b is not None and a == a and b == b else "—"
        rows.append((measure, cell(a), cell(b), ratio, target))

    def phase(s: Size, name: str) -> float | None:
        p = s.dispatch.phase(name)
        return None if p is None else p.rate

    def board(s: Size, key: str, p: float) -> float | None:
        values = [ms for ph in s.dispatch.during() for ms in getattr(ph, key)]
        return pct(values, p) if values else None

    def per_s(s: Size, key: str) -> float | None:
        during = s.dispatch.during()
        seconds = sum(ph.watch.get("t", 0.0) for ph in during)
        return sum(ph.watch.get(key, 0.0) for ph in during) / seconds if seconds else None

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
    row("message list, first page p50 (ms)", ms(small.msg_first_ms, 50), ms(large.msg_first_ms, 50), "<= 20")
    row(
        "message list, 100 pages deep p50 (ms)", ms(small.msg_deep_ms, 50), ms(large.msg_deep_ms, 50), "<= 20"
    )
    row(
        "message list, `status=bounced` first page p50 (ms)",
        ms(small.msg_status_ms, 50),
        ms(large.msg_status_ms, 50),
        "",
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
        small.campaign_messages / small.campaign_s if small.campaign_s else None,
        large.campaign_messages / large.campaign_s if large.campaign_s else None,
        ">= 20,000 (200,000 recipients)",
        ",.0f",
    )
    row(
        "dispatch of the queued campaign alone, 1 worker, messages/s",
        phase(small, "drain"),
        phase(large, "drain"),
        "",
        ",.0f",
    )
    row(
        "campaign dispatch end to end (sandbox, webhooks on), 1 worker, messages/s",
        phase(small, "1 worker"),
        phase(large, "1 worker"),
        ">= 5,000",
        ",.0f",
    )
    row(
        "campaign dispatch end to end (sandbox, webhooks on), 2 workers, messages/s",
        phase(small, "2 workers"),
        phase(large, "2 workers"),
        ">= 9,000",
        ",.0f",
    )
    for label, key in (("board page `GET /`", "page_ms"), ("counters `GET /board/counters`", "counters_ms")):
        for p, target in ((50, ""), (99, "<= 100")):
            row(
                f"{label} p{p} (ms), {WATCHERS} watchers, during dispatch",
                board(small, key, p),
                board(large, key, p),
                target,
            )
    row(
        "`board.counters` events/s at one watcher",
        per_s(small, "counters0"),
        per_s(large, "counters0"),
        "<= 1 (one producer per workspace)",
        ".2f",
    )
    row(
        "events/s at one watcher (all board events)",
        per_s(small, "frames0"),
        per_s(large, "frames0"),
        "",
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
            f"\n{s.contacts:,} contacts: built in {s.build_s:.1f} s; {s.messages:,} earlier messages "
            f"generated in {s.messages_build_s:.1f} s; exported {s.export_rows:,} rows in "
            f"{s.export_s:.2f} s; campaign of {s.campaign_messages:,} messages expanded in {s.campaign_s:.1f} s; server RSS {mib(before)} MiB before, {mib(peak)} MiB peak, {mib(after)} MiB after; "
            "slowest terms (worst of the rounds): " + ", ".join(f"{q!r} {t:.0f} ms" for t, q in s.slowest)
        )
        out.extend(f"  {_phase_note(p)}" for p in s.dispatch.phases)
        if s.dispatch.log_lines:
            levels = ", ".join(f"{n:,} {level}" for level, n in sorted(s.dispatch.log_lines.items()))
            out.append(f"  workers' log: {levels} lines; first: {s.dispatch.first_warning or '—'}")
    return out


def _phase_note(p: Phase) -> str:
    w = p.watch
    seconds = w.get("t", 0.0)
    head = (
        f"dispatch {p.name}: {p.messages:,} messages in {p.seconds:.1f} s"
        + (f" (TIMED OUT, {p.left_queued:,} still queued)" if p.timed_out else "")
        + f"; webhooks in {p.settled_s:.1f} s later"
        + (f" ({p.unsettled:,} still not delivered)" if p.unsettled else "")
    )
    board = (
        f"; board probed {len(p.page_ms)} + {len(p.counters_ms)} times" if p.page_ms else "; board not probed"
    )
    return (
        head
        + board
        + f"; {WATCHERS} watchers got {w.get('frames', 0):,.0f} event frames ({w.get('cuts', 0):.0f} cut and"
        f" resumed) over {seconds:.1f} s; counter tables scanned {p.counter_scans:,} times"
        " (pg_stat_user_tables)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=1_000_000, help="the large size (default 1,000,000)")
    p.add_argument("--small", type=int, default=20_000, help="the comparison size (default 20,000)")
    p.add_argument("--rounds", type=int, default=3, help="measured passes over the 30 terms (default 3)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to cores")
    p.add_argument(
        "--dispatch-timeout",
        type=float,
        default=900.0,
        help="seconds one dispatch phase may take before it is reported timed out (default 900)",
    )
    p.add_argument(
        "--messages",
        type=int,
        default=10_000_000,
        help="earlier messages generated at the large size (default 10,000,000; the small size gets "
        "the same number per contact)",
    )
    p.add_argument(
        "--reads-only",
        action="store_true",
        help="search, contact lists and export only (no campaign, no dispatch: minutes instead of ~25)",
    )
    args = p.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    load = os.getloadavg()
    if pin:
        os.sched_setaffinity(0, {1})
    per_contact = args.messages / args.contacts
    sizes = [
        run_size(n, args.rounds, pin, args.dispatch_timeout, args.reads_only, round(n * per_contact))
        for n in (args.small, args.contacts)
    ]
    print(
        f"\nScale: one `switchboard serve` on PostgreSQL + Redis ({'server core 0, client core 1' if pin else 'not pinned'}); "
        f"{len(queries(args.small))} search terms x {args.rounds} rounds, one request at a time; "
        f"load average at start {load[0]:.1f}.\n"
    )
    print("\n".join(table(*sizes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

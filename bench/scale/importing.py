"""Import measure (issue 15): `python -m bench.scale.importing [--rows 1000000] [--phones]`.

On a fresh PostgreSQL database migrated to head, one real `switchboard serve` (pinned to core 0)
and an admin signed in through the API: a generated CSV (name, email, tags, a `plan` attribute,
and with `--phones` a phone on every row; names and emails from bench/scale/data.py) is uploaded
in ONE `POST /api/v1/contacts/import?mode=create` (streamed from disk, gzip with `--gzip`), then the
status endpoint is polled until the job is done. Prints rows/s from the first byte sent to the
job's end, the upload's share of it, and the server's RSS before, at its peak and after.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.fanout.__main__ import rss_kib
from bench.scale import data
from bench.scale.served import served, signed_in

EMAIL, PASSWORD = "bench@import.test", "import-bench-password"


def write_csv(path: Path, rows: int, *, phones: bool, packed: bool) -> None:
    opener = gzip.open if packed else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        f.write("name,email,phone,tags,plan\n" if phones else "name,email,tags,plan\n")
        for g in range(1, rows + 1):
            name, email, phone = data.person(g)
            tags = "vip;newsletter" if g % 10 == 0 else "newsletter"
            f.write(
                f"{name},{email},{phone},{tags},plan-{g % 4}\n"
                if phones
                else f"{name},{email},{tags},plan-{g % 4}\n"
            )


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:  # noqa: ASYNC230 (the client's side of the benchmark)
        while chunk := f.read(1 << 20):
            yield chunk


async def measure(port: int, pid: int, path: Path, *, packed: bool) -> dict[str, float]:
    async with signed_in(port, EMAIL, PASSWORD) as client:
        before = peak = rss_kib(pid)
        headers = {"content-type": "text/csv", **({"content-encoding": "gzip"} if packed else {})}
        t0 = time.perf_counter()
        r = await client.post("/api/v1/contacts/import?mode=create", content=_chunks(path), headers=headers)
        accepted = time.perf_counter() - t0
        if r.status_code != 202:
            raise SystemExit(f"import -> {r.status_code}: {r.text[:300]}")
        job = r.json()["job_id"]
        while True:
            peak = max(peak, rss_kib(pid))
            status = (await client.get(f"/api/v1/contacts/import/{job}")).json()
            if status["status"] != "running":
                break
            await asyncio.sleep(0.2)
        took = time.perf_counter() - t0
        if status["status"] != "done":
            raise SystemExit(f"import ended {status['status']}: {status['error']}")
        return {
            "rows": status["created"],
            "rejected": status["rejected_count"],
            "seconds": took,
            "accepted_s": accepted,
            "rss_before": before,
            "rss_peak": peak,
            "rss_after": rss_kib(pid),
        }


def run(rows: int, *, phones: bool, packed: bool, pin: bool, batch: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="sb-import-bench-"))
    env = {"SWITCHBOARD_IMPORT_DIR": str(work / "uploads"), "SWITCHBOARD_IMPORT_BATCH_ROWS": str(batch)}
    csv_path = work / ("people.csv.gz" if packed else "people.csv")
    write_csv(csv_path, rows, phones=phones, packed=packed)
    try:
        with served(
            "sb_import_bench", workspace="Import", email=EMAIL, password=PASSWORD, pin=pin, env=env
        ) as srv:
            out = asyncio.run(measure(srv.port, srv.pid, csv_path, packed=packed))
        out["bytes"] = csv_path.stat().st_size
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale.importing", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--phones", action="store_true", help="a phone on every row (phonenumbers: ~70 µs a row)")
    p.add_argument("--gzip", action="store_true", help="upload the CSV gzipped")
    p.add_argument("--batch", type=int, default=5000, help="SWITCHBOARD_IMPORT_BATCH_ROWS")
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    load = os.getloadavg()
    if pin:
        os.sched_setaffinity(0, {1})
    r = run(args.rows, phones=args.phones, packed=args.gzip, pin=pin, batch=args.batch)
    load_end = os.getloadavg()
    mib = 1024
    print(
        f"\nImport: {r['rows']:,.0f} rows created ({r['rejected']:,.0f} rejected) from one "
        f"{r['bytes'] / 2**20:.1f} MiB upload{' (gzip)' if args.gzip else ''}, batches of {args.batch:,}, "
        f"{'phones on every row' if args.phones else 'no phones'}; server "
        f"{'on core 0, client core 1' if pin else 'not pinned'}; load average {load[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end.\n"
        f"| measure | value | target |\n|---|---:|---|\n"
        f"| rows/s (first byte sent → job done) | {r['rows'] / r['seconds']:,.0f} | >= 20,000 |\n"
        f"| of which upload + count until 202 (s) | {r['accepted_s']:.1f} | |\n"
        f"| total (s) | {r['seconds']:.1f} | |\n"
        f"| server RSS before / peak / after (MiB) | {r['rss_before'] / mib:.0f} / {r['rss_peak'] / mib:.0f} / "
        f"{r['rss_after'] / mib:.0f} | growth < 200 |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

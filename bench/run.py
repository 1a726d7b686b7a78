"""`make bench`: run every benchmark in turn and write bench/REPORT.md from what each printed.

Each benchmark prints its own tables (our figures, the peers' and the limit, measured in the same run,
with the ratios); this collects them with the machine and the date. Benchmarks are bounded in time and
only ever target 127.0.0.1."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = {
    "dispatch": "Dispatcher: 10,000 due messages on PostgreSQL (issue 3)",
    "webhooks": "Inbound provider webhooks on PostgreSQL (issue 4)",
    "fanout": "Real-time fan-out over WebSockets (issue 5)",
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def run(name: str, extra: list[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = proc.stdout
    if proc.returncode != 0:
        out += "\n[stderr]\n" + proc.stderr[-4000:]
    sys.stdout.write(out)
    sys.stdout.flush()
    return proc.returncode, out, time.monotonic() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    p.add_argument("--report", default=str(ROOT / "bench" / "REPORT.md"))
    args = p.parse_args()
    names = args.only or list(BENCHES)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = []
    failed = []
    for name in names:
        print(f"\n### bench.{name}\n", flush=True)
        rc, out, took = run(name, [])
        if rc != 0:
            failed.append(name)
        status = "" if rc == 0 else f" — **exited {rc}**"
        sections.append(
            f"## {BENCHES[name]}\n\n`python -m bench.{name}` ({took:.0f} s{status})\n\n```\n{out.strip()}\n```\n"
        )
    report = (
        "# Benchmark report\n\n"
        f"Made by `make bench` on {now}.\n\nMachine: {machine()}.\n\n"
        "Every figure below was measured in the same run as the peers and the limit beside it; runs on this "
        "shared 2-core machine vary by up to a third, so compare rows of one run only.\n\n"
        + "\n".join(sections)
    )
    Path(args.report).write_text(report)
    print(f"\nwrote {args.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

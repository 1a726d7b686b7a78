"""Campaign expansion alone (issue 15): `python -m bench.scale.expansion [--contacts 1000000]`.

`bench.scale`'s expansion measure without its half hour of other phases, for comparing two
versions of the expander back to back: on a fresh PostgreSQL database migrated to head, contacts
and twice as many earlier messages generated set-wise (bench/scale/data.py; 1 contact in 5 tagged
`spring`), one real `switchboard serve --no-worker` (pinned to core 0, Redis for its events) and an
admin signed in through the API; then `bench.scale`'s own campaign (a marketing email naming each
recipient, with their unsubscribe link) from `POST /api/v1/campaigns` until it is `done`. No
worker runs, so the figure is the expansion's alone. Prints messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.scale.__main__ import EMAIL, PASSWORD, REDIS, Size, _build, _campaign
from bench.scale.served import served, signed_in


async def _measure(port: int, contacts: int) -> Size:
    size = Size(contacts)
    async with signed_in(port, EMAIL, PASSWORD) as client:
        await _campaign(client, size)
    return size


def run(contacts: int, pin: bool) -> Size:
    def build(db_url: str) -> None:
        asyncio.run(_build(db_url, contacts, 2 * contacts))

    with served(
        "sb_expansion_bench",
        workspace="Scale",
        email=EMAIL,
        password=PASSWORD,
        pin=pin,
        env={"SWITCHBOARD_REDIS_URL": REDIS},
        before_start=build,
    ) as srv:
        return asyncio.run(_measure(srv.port, contacts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale.expansion", description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=1_000_000, help="contacts (default 1,000,000)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to cores")
    args = p.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    size = run(args.contacts, pin)
    rate = size.campaign_messages / size.campaign_s
    print("| measure | value | target |\n|---|---:|---|")
    print(
        f"| campaign expansion of {size.campaign_messages:,} recipients, messages/s | {rate:,.0f} | >= 20,000 |"
    )
    print(
        f"\n{args.contacts:,} contacts; expanded in {size.campaign_s:.1f} s; load average {os.getloadavg()[0]:.1f} at the end."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

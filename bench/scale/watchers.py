"""Board watchers for bench/scale: `python -m bench.scale.watchers --url ws://HOST:PORT/ws --token T`.

`--clients` WebSockets (default 50), each subscribed to `board` as the dashboard's board page is
(DESIGN §6: `{"op":"subscribe","topics":["board"],"after":…}`, auth `?token=`), reading every
frame. A socket the server cuts (past its send buffer) reconnects with `after` = the last id it
saw, as the page's `SB.Live` does. Prints `READY` once every socket is subscribed; then, for each
line `mark` on stdin, one JSON line of cumulative counts: event frames at all sockets and at the
first one, `board.counters` events at the first one, cuts. Exits at the end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass, field

import orjson
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, WebSocketException

RX_ID = re.compile(rb'"id":\s*(\d+)')  # the envelope's id (`message_id` and friends do not match)
RX_COUNTERS = re.compile(rb'"type":\s*"board\.counters"')


@dataclass
class Counts:
    clients: int
    frames: list[int] = field(default_factory=list)
    counters: list[int] = field(default_factory=list)
    cuts: int = 0
    subscribed: int = 0

    def __post_init__(self) -> None:
        self.frames = [0] * self.clients
        self.counters = [0] * self.clients


async def watch(i: int, url: str, counts: Counts, ready: asyncio.Event) -> None:
    after: int | None = None
    first = True
    while True:
        try:
            async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "topics": ["board"], "after": after}).decode())
                while True:
                    frame = await ws.recv(decode=False)
                    if first and b'"subscribed"' in frame:
                        first = False
                        counts.subscribed += 1
                        if counts.subscribed == counts.clients:
                            ready.set()
                        continue
                    m = RX_ID.search(frame)
                    if m is None:  # ping, subscribed after a reconnect, resync, or an error
                        kind = frame.replace(b" ", b"")
                        if b'"type":"resync"' in kind:  # too far behind to replay: reload, as the page does
                            after = None
                            raise WebSocketException("resync")
                        if b'"type":"error"' in kind:  # e.g. a refused replay: never sit silent
                            raise WebSocketException(frame.decode(errors="replace"))
                        continue
                    after = int(m[1])
                    counts.frames[i] += 1
                    if RX_COUNTERS.search(frame):
                        counts.counters[i] += 1
        except (WebSocketException, InvalidHandshake, OSError, TimeoutError):
            counts.cuts += 1
            await asyncio.sleep(0.2)


async def main_async(url: str, clients: int) -> None:
    counts = Counts(clients)
    ready = asyncio.Event()
    tasks = [asyncio.create_task(watch(i, url, counts, ready)) for i in range(clients)]
    await asyncio.wait_for(ready.wait(), 60)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "mark":
            out = {
                "t": time.time(),
                "frames": sum(counts.frames),
                "frames0": counts.frames[0],
                "counters0": counts.counters[0],
                "cuts": counts.cuts,
            }
            print(orjson.dumps(out).decode(), flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="ws://HOST:PORT/ws")
    p.add_argument("--token", required=True, help="an access token")
    p.add_argument("--clients", type=int, default=50)
    args = p.parse_args()
    uvloop.run(main_async(f"{args.url}?token={args.token}", args.clients))


if __name__ == "__main__":
    main()

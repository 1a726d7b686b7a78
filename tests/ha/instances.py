"""Real `switchboard serve` instances on PostgreSQL and Redis, and a WebSocket client that
reconnects as the browser's does (`static/live.js`).

`pair_behind_nginx` starts two `serve --no-worker` processes (each in its own process group,
stopped or killed by pid) behind the tested nginx config (`tests.ops.procs.running_nginx`).
`LiveClient` follows topics with the page's protocol: subscribe with `after`, drop duplicates by
id, and after a drop wait `backoff(recent drops)` — the same full-jitter formula as live.js."""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from tests.conftest import PASSWORD
from tests.ops.procs import BIN, NGINX, env_for, free_port, running, running_nginx, switchboard, wait_http

# live.js: RECONNECT_BASE_MS, RECONNECT_MAX_MS, DROP_WINDOW_MS, and backoff() (+100 ms).
RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 15.0
DROP_WINDOW_S = 60.0
WS_OPEN_TIMEOUT_S = 5.0  # live.js WS_OPEN_TIMEOUT_MS: no "subscribed" by then, the socket is unusable


def backoff(attempt: int) -> float:
    """live.js `backoff(attempt)`: full jitter over an exponential ceiling, plus 100 ms."""
    return random.random() * min(RECONNECT_MAX_S, RECONNECT_BASE_S * 2**attempt) + 0.1


def raise_nofile() -> None:
    """Our file limit to its hard maximum; the instances and nginx started after inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def kill_instance(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL an instance and whatever it started (its own process group, by its pid)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@dataclass
class Pair:
    base: str  # nginx, https
    tls: ssl.SSLContext
    webs: list[subprocess.Popen[bytes]]
    web_ports: list[int]
    email: str
    run_dir: Path

    @property
    def ws_url(self) -> str:
        return self.base.replace("https://", "wss://") + "/ws"


@contextmanager
def pair_behind_nginx(pg_url: str, redis_url: str, **settings: str) -> Iterator[Pair]:
    """Two `switchboard serve --no-worker` on `pg_url` (migrated) and `redis_url` (a key prefix
    of their own), behind nginx; one user (admin of a new workspace)."""
    if NGINX is None:
        raise AssertionError("nginx is required (apt-get install nginx)")
    raise_nofile()
    # Not under pytest's 0700 tmp: nginx's workers (nobody, when started as root) read from here.
    run_dir = Path(tempfile.mkdtemp(prefix="sb-ha-", dir="/tmp"))
    run_dir.chmod(0o755)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        env = env_for(
            pg_url,
            SWITCHBOARD_REDIS_URL=redis_url,
            SWITCHBOARD_REDIS_PREFIX=f"sbtest:ha:{uuid.uuid4().hex[:8]}:",
            **settings,
        )
        email = f"ha-{uuid.uuid4().hex[:6]}@ha.test"
        switchboard(
            "createuser", "--workspace", f"HA {email}", "--email", email, "--password", PASSWORD, env=env
        )
        web_ports = [free_port(), free_port()]
        webs = []
        for i, port in enumerate(web_ports):
            argv = [str(BIN / "switchboard"), "serve", "--no-worker", "--port", str(port)]
            webs.append(stack.enter_context(running(argv, env=env, log=run_dir / f"web{i}.log")))
        for proc, port in zip(webs, web_ports, strict=True):
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout_s=60)
        static_dir = run_dir / "static"
        static_dir.mkdir(mode=0o755)
        proxy = stack.enter_context(running_nginx(run_dir, web_ports, static_dir))
        yield Pair(proxy.base, proxy.tls, webs, web_ports, email, run_dir)


@dataclass
class LiveClient:
    """One page's live connection (WebSocket only; live.js would fall back to long-polling after
    three drops in a minute or a socket that never subscribes — here such an attempt is one more
    drop and the client retries with the backoff, so every reconnect is on the socket)."""

    url: str
    tls: ssl.SSLContext
    topics: list[str]
    after: int | None
    ids: list[int] = field(default_factory=list)  # after dedupe, in arrival order
    duplicates: int = 0  # frames dropped by the dedupe
    drops: list[float] = field(default_factory=list)  # monotonic times the socket was lost
    accepted: list[float] = field(default_factory=list)  # handshakes answered (101)
    subscribed: list[float] = field(default_factory=list)  # "subscribed" frames
    resyncs: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # why attempts or sockets ended
    stopped: bool = False

    async def run(self) -> None:
        recent: list[float] = []
        while not self.stopped:
            try:
                await self._once()
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                self.failures[_why(exc)] += 1
            if self.stopped:
                return
            now = time.monotonic()
            self.drops.append(now)
            recent = [t for t in recent if now - t < DROP_WINDOW_S] + [now]
            await asyncio.sleep(backoff(len(recent)))

    async def _once(self) -> None:
        async with connect(self.url, ssl=self.tls, open_timeout=WS_OPEN_TIMEOUT_S, ping_interval=None) as ws:
            self.accepted.append(time.monotonic())
            await ws.send(
                orjson.dumps({"op": "subscribe", "topics": self.topics, "after": self.after}).decode()
            )
            # live.js closes a socket that has not said "subscribed" within WS_OPEN_TIMEOUT_MS.
            async with asyncio.timeout(WS_OPEN_TIMEOUT_S) as opening:
                async for raw in ws:
                    msg = orjson.loads(raw)
                    kind = msg.get("type")
                    if kind == "subscribed":
                        self.subscribed.append(time.monotonic())
                        opening.reschedule(None)
                    elif kind == "resync":
                        self.resyncs += 1
                    elif kind == "error":
                        self.failures[f"error frame: {msg.get('detail')}"] += 1
                    elif kind not in ("ping", "pong"):
                        self._deliver(msg)

    def _deliver(self, msg: dict[str, object]) -> None:
        """live.js `deliver`: drop what is not newer than the last id applied."""
        eid = msg.get("id")
        if not isinstance(eid, int):
            return
        if self.after is not None and eid <= self.after:
            self.duplicates += 1
            return
        self.after = eid
        self.ids.append(eid)


def _why(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

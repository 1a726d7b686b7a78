"""The deliverer: sends the event log to outgoing webhook endpoints, signed and retried.

Runs as a component (async start/stop) in the worker process and in the embedded `serve`.
Each pass (every `poll_s`, or at once after `wake()`):

1. for every enabled endpoint behind its workspace's event log, turn the new events it wants
   into delivery rows and advance its cursor, in one transaction;
2. for every endpoint whose head delivery is due, start one task (unless one runs already) that
   sends the head, and on success the next, until the queue is empty or an attempt fails.

Endpoints never wait on each other: each has its own task, at most `concurrency` tasks run, and
every request is cut off after `timeout_s`. Several processes may run a deliverer; the head is
claimed with a lease (see `server.endpoints.service`), so each delivery is in flight once at a time.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass

import httpx
import orjson

from realtime.lifecycle import Supervisor
from realtime.pglisten import pg_listen
from server.db import Database, utcnow
from server.endpoints import service
from server.endpoints.guard import public_only_transport
from server.endpoints.service import Attempt, Outcome
from server.events.service import NOTIFY_CHANNEL
from server.signing import sign

log = logging.getLogger("switchboard.deliverer")

SIGNATURE_HEADER = "Switchboard-Signature"
USER_AGENT = "Switchboard-Webhooks/1"
PRUNE_EVERY_S = 3600.0
RESPONSE_PEEK_BYTES = 1024  # of a receiver's answer we read at most this; a longer one is cut


@dataclass(frozen=True, slots=True)
class DelivererConfig:
    poll_s: float = 1.0  # fallback pass interval; `wake()` runs a pass at once
    timeout_s: float = 10.0  # whole request, connect to last byte
    concurrency: int = 32  # endpoints being delivered to at once by this process
    # Backoff after the n-th failed attempt: base * factor**(n-1), capped, ±jitter.
    # 30 s * 3**n capped at 6 h puts the 10th attempt about 21 h after the first.
    backoff_base_s: float = 30.0
    backoff_factor: float = 3.0
    backoff_max_s: float = 6 * 3600.0
    jitter: float = 0.2
    max_age_s: float = 24 * 3600.0  # a delivery is retried for this long, then given up
    max_failures: int = 10  # consecutive failed attempts that disable the endpoint
    batch: int = 500  # events read from the log per transaction
    error_pause_s: float = 5.0  # after a pass fails (database down), before the next one
    # On PostgreSQL a pass also runs when events commit (LISTEN); passes are at least this far
    # apart so a burst of commits costs a few passes, not one per event.
    min_pass_interval_s: float = 0.05
    allow_private: bool = False  # deliver to non-public addresses too (see server/endpoints/guard.py)
    log_retention_days: float = 30.0  # finished deliveries stay in the log this long


class Deliverer:
    def __init__(
        self, db: Database, config: DelivererConfig | None = None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.db = db
        self.config = config or DelivererConfig()
        self._client = client
        self._own_client = client is None
        self._wake = asyncio.Event()
        self._stopping = False
        self.supervisor = Supervisor("deliverer")
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._pruned_at = float("-inf")
        # Attempts by outcome (success, failure, gave_up), read by the metrics exporter.
        self.outcomes: collections.Counter[str] = collections.Counter()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is None:
            cfg = self.config
            limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.timeout_s),
                limits=limits,
                transport=None if cfg.allow_private else public_only_transport(limits=limits),
                follow_redirects=False,  # a redirect is a failure: the receiver must fix its URL
                trust_env=False,  # a proxy from the environment would route around the guard
                headers={"User-Agent": USER_AGENT},
            )
        self._stopping = False
        self.supervisor.spawn("deliverer", self._run)
        if self.db.dialect == "postgresql":
            self.supervisor.spawn("deliverer-listen", self._listen_pg)

    async def stop(self) -> None:
        """Stop passes and cut in-flight requests; their leases expire and they are retried."""
        self._stopping = True
        self._wake.set()
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(self.supervisor.stop(), *tasks, return_exceptions=True)
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    def wake(self) -> None:
        """Run a pass now (after new events were committed in this process, a resend, …)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            pause = self.config.poll_s
            try:
                await self.run_once()
            except Exception:
                # Logged, never swallowed silently; the next pass retries (e.g. the database is back).
                log.exception("deliverer pass failed")
                pause = self.config.error_pause_s
            try:
                async with asyncio.timeout(pause):
                    await self._wake.wait()
            except TimeoutError:
                pass
            await asyncio.sleep(self.config.min_pass_interval_s)

    async def _listen_pg(self) -> None:
        """Wake on every commit that wrote events (NOTIFY from `emit_many`), across processes."""
        await pg_listen(self.db.url, NOTIFY_CHANNEL, lambda _payload: self._wake.set())

    # --- one pass -------------------------------------------------------------------------

    async def run_once(self) -> None:
        await self.take_events()
        await self.start_due()
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            async with self.db.transaction() as s:
                gone = await service.prune_deliveries(
                    s, before=utcnow() - dt.timedelta(days=self.config.log_retention_days)
                )
            self._pruned_at = time.monotonic()
            if gone:
                log.info("removed %d finished deliveries from the log", gone)

    async def take_events(self) -> None:
        async with self.db.transaction() as s:
            behind = await service.endpoints_behind(s)
        for endpoint_id in behind:
            while True:
                async with self.db.transaction() as s:
                    n = await service.take_events(s, endpoint_id, batch=self.config.batch)
                if n < self.config.batch:
                    break

    async def start_due(self) -> None:
        room = self.config.concurrency - len(self._inflight)
        if room <= 0:
            return
        async with self.db.transaction() as s:
            due = await service.due_endpoints(s, now=utcnow(), limit=room + len(self._inflight))
        for endpoint_id in due:
            if len(self._inflight) >= self.config.concurrency:
                break
            if endpoint_id in self._inflight:
                continue
            task = asyncio.create_task(self._drain(endpoint_id), name=f"deliver-endpoint-{endpoint_id}")
            self._inflight[endpoint_id] = task
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        for endpoint_id, t in list(self._inflight.items()):
            if t is task:
                del self._inflight[endpoint_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task %s failed", task.get_name(), exc_info=task.exception())
        if not self._stopping:
            self._wake.set()  # a slot is free: look for more due work

    async def _drain(self, endpoint_id: int) -> None:
        """Send this endpoint's due deliveries in order until one fails or none is due."""
        while not self._stopping:
            now = utcnow()
            lease = now + dt.timedelta(seconds=self.config.timeout_s + 30)
            async with self.db.transaction() as s:
                attempt = await service.claim_head(s, endpoint_id, now=now, lease_until=lease)
            if attempt is None:
                return
            outcome = await self.send(attempt)
            await self._record(attempt, outcome)
            if not outcome.ok:
                return

    # --- one attempt ----------------------------------------------------------------------

    async def send(self, attempt: Attempt) -> Outcome:
        assert self._client is not None, "start() the deliverer first"
        body = orjson.dumps(attempt.payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(attempt.secrets, body),
            "Switchboard-Event-Id": str(attempt.payload.get("id", "")),
            "Switchboard-Event-Type": str(attempt.payload.get("type", "")),
            "Switchboard-Delivery-Id": str(attempt.delivery_id),
        }
        started = time.perf_counter()
        try:
            # httpx's timeout is per phase; this one bounds the whole exchange (slow-drip servers).
            async with asyncio.timeout(self.config.timeout_s):
                async with self._client.stream(
                    "POST", attempt.url, content=body, headers=headers
                ) as response:
                    head = await _read_at_most(response, RESPONSE_PEEK_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(False, None, _ms(started), f"timed out after {self.config.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(False, None, _ms(started), f"{exc.__class__.__name__}: {exc}"[:500])
        latency = _ms(started)
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code, latency)
        snippet = head[:200].decode("utf-8", "replace").replace("\x00", "").strip()  # no NUL in PG
        error = f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")
        return Outcome(False, response.status_code, latency, error)

    async def _record(self, attempt: Attempt, outcome: Outcome) -> None:
        now = utcnow()
        next_at: dt.datetime | None = None
        if not outcome.ok:
            next_at = self.next_attempt_at(attempt, now)
        self.outcomes["success" if outcome.ok else "failure" if next_at else "gave_up"] += 1
        async with self.db.transaction() as s:
            reason = await service.record(
                s, attempt, outcome, now=now, next_attempt_at=next_at, max_failures=self.config.max_failures
            )
        if reason:
            log.warning("endpoint %s disabled: %s", attempt.endpoint_id, reason)

    def next_attempt_at(self, attempt: Attempt, now: dt.datetime) -> dt.datetime | None:
        """When to retry after this failure; None once the delivery has had its `max_age_s`."""
        cfg = self.config
        give_up_at = attempt.created_at + dt.timedelta(seconds=cfg.max_age_s)
        if now >= give_up_at:
            return None
        failures = attempt.attempts + 1
        delay = min(cfg.backoff_max_s, cfg.backoff_base_s * cfg.backoff_factor ** (failures - 1))
        delay *= 1 + random.uniform(-cfg.jitter, cfg.jitter)
        # The last try falls exactly at the end of the window rather than past it.
        return min(now + dt.timedelta(seconds=delay), give_up_at)


def signature_header(
    secrets: tuple[str, ...] | list[str], body: bytes, *, timestamp: int | None = None
) -> str:
    """`t=<unix>,v1=<hmac>` with one `v1=` per secret (two during a rotation's overlap)."""
    t = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={t}"]
    for secret in secrets:
        parts.append(sign(secret, body, timestamp=t).split(",", 1)[1])
    return ",".join(parts)


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The start of a receiver's answer: enough for the log, never a whole large body in memory."""
    out = b""
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) >= limit:
            break
    return out[:limit]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)

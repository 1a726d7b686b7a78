"""The dispatcher: claims due messages and sends them through their providers.

One claim loop takes batches of due messages (see `claims`), checks them against the suppression
list and, for marketing, the consent ledger and quiet hours (one query per batch each; a message in
its contact's quiet window goes back to `scheduled` until the window ends, server/consent/quiet.py).
An opt-out of the whole channel ends a marketing message there; one given to a single number (SMS
STOP) is checked per provider at send time against the number it sends from (`Adapter.sender`):
a provider sending from that number, or from one it picks itself, is skipped, and a message no
provider may send ends `suppressed` (`opted_out`) without reaching one. The claim loop then
starts one send task per message under a semaphore (`dispatcher_concurrency`). A send tries
the channel's providers by priority, skipping those whose circuit is open or that asked us to wait,
and keeps each under its send rate. Outcomes are written back in bulk by a flusher, fenced so a
stale claim cannot overwrite a newer one. Side tasks (claim, flush, reclaim, gauges, listen) run
under the component supervisor (realtime.lifecycle) without restart: if one fails, it is logged,
`/readyz` names it, the dispatcher stops and `error` says why (the worker then exits).

Delivery is at least once: a worker killed between a provider's answer and the flush leaves the
message in `sending`; after its lease another worker sends it again, with the same idempotency key
(`sb-<workspace>-<message>`), so a provider that deduplicates sends it once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from realtime.lifecycle import Supervisor
from realtime.pglisten import pg_listen
from server.consent import keywords, quiet
from server.consent import service as consent
from server.consent.models import ALL_SCOPE, MARKETING
from server.consent.tokens import Links, base_url
from server.conversations.threading import reply_token
from server.db import utcnow
from server.logs import request_context
from server.messages import claims
from server.messages.circuit import Circuits
from server.messages.claims import Claimed, Outcome
from server.messages.models import MessageStatus
from server.messages.provider_pool import ProviderPool, Route, Routes, make_http_client
from server.messages.retry import RetryPolicy
from server.messages.status import AppliedChange, record_applied
from server.messages.suppression import SuppressionFilter
from server.providers.adapters import ADAPTERS, Adapter, OutgoingMessage, PermanentError, TransientError
from server.ratelimit import Limiter, send_rate_bucket

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger("switchboard.dispatcher")

# Outcomes wait this long for company before the flusher writes them: one transaction per few
# dozen messages instead of one per message, for a few milliseconds of status latency.
FLUSH_LINGER_S = 0.02
FLUSH_CHUNK = 1000
# The queue depth / lag gauges are a count over due rows: cheap, but not worth doing per batch.
GAUGE_INTERVAL_S = 5.0
# On stop, sends in flight get this long to finish; the rest are left to the lease.
STOP_GRACE_S = 20.0
# Never poll faster than this when the next due message is "now" but others hold it locked.
MIN_IDLE_S = 0.02
DB_RETRY_MAX_S = 10.0
SUPPRESSED_REASON = "address is on the suppression list"
OPTED_OUT_REASON = "opted_out"  # DESIGN §9: the contact opted out of marketing on the channel
NO_SCOPES: frozenset[str] = frozenset()
# Database failures a worker rides out (PostgreSQL restarting, network blip); anything else is a bug.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    OperationalError,
    InterfaceError,
)


def transient_db_error(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def idempotency_key(workspace_id: int, message_id: int) -> str:
    return f"sb-{workspace_id}-{message_id}"


def outgoing(m: Claimed, secret: str = "", links: Links | None = None) -> OutgoingMessage:
    """`secret` signs the reply token an email's `Reply-To` carries (server/conversations/threading);
    with `links`, a marketing email carries its recipient's one-click unsubscribe URL."""
    unsubscribe = mailbox = ""
    if links is not None and m.category == MARKETING and m.channel == "email" and m.contact_id:
        unsubscribe = links.url(m.workspace_id, m.contact_id, m.channel)
        mailbox = links.mailbox(m.workspace_id, m.contact_id, m.channel)
    return OutgoingMessage(
        message_id=m.id,
        workspace_id=m.workspace_id,
        channel=m.channel,
        to=m.to_address,
        subject=m.subject,
        body=m.body,
        idempotency_key=idempotency_key(m.workspace_id, m.id),
        template=m.whatsapp_template if m.channel == "whatsapp" else None,
        from_address=m.from_address or "",
        reply_token=reply_token(secret, m.workspace_id, m.id) if secret and m.channel == "email" else "",
        unsubscribe_url=unsubscribe,
        unsubscribe_mailbox=mailbox,
    )


@dataclass
class DispatchStats:
    """Counters and gauges for metrics (read by the ops exporter; written only here)."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0  # requeued after a transient failure
    deferred: int = 0  # requeued without an attempt: every provider paused, open or over its rate
    suppressed: int = 0
    reclaimed: int = 0  # taken back from a dead worker's expired lease
    fenced: int = 0  # outcomes dropped because the claim had been taken back meanwhile
    in_flight: int = 0
    queue_depth: int = 0  # due and not yet claimed (every `GAUGE_INTERVAL_S`)
    oldest_due_s: float = 0.0  # how long the oldest of those has been due
    lag_last_s: float = 0.0  # sent time - send_at of the last sent message
    lag_sum_s: float = 0.0
    lag_max_s: float = 0.0
    held: int = 0  # marketing messages put back by quiet hours


class Dispatcher:
    """A `Services` component: `start()` launches the loops, `stop()` drains them."""

    def __init__(
        self,
        services: Services,
        *,
        adapters: Mapping[str, type[Adapter]] = ADAPTERS,
        http: httpx.AsyncClient | None = None,
        rate_limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        s = services.settings
        self.services = services
        self.settings = s
        self.db = services.db
        self.retry = retry or RetryPolicy(s.retry_base_s, s.retry_max_s, s.max_attempts)
        self.circuits = Circuits(failures=s.circuit_failures, reset_s=s.circuit_reset_s)
        self.rate = rate_limiter or services.ratelimits.limiter
        self.suppression = SuppressionFilter()
        # List-Unsubscribe needs an absolute URL: without a public URL marketing email goes without it.
        self.links = Links(s) if base_url(s) else None
        self.stats = DispatchStats()
        self.error: BaseException | None = None
        self.stopped = asyncio.Event()
        # A send over its provider's rate waits at most this long; past it the message is deferred.
        self.max_rate_wait_s = min(5.0, s.send_lease_s / 4)
        self._adapters = adapters
        self._http = http
        self._own_http = http is None
        self._pool: ProviderPool | None = None
        self._wake: asyncio.Event = services.dispatch_wakeup
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(s.dispatcher_concurrency)
        self._sends: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._outcomes_ready = asyncio.Event()
        self._closing = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.supervisor = Supervisor("dispatcher")
        self._monitor: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        allow_private = self.settings.allow_private_endpoints
        # Where the sandbox posts its delivery reports: `serve`'s own address when none is configured.
        own_url = self.settings.public_url or self.settings.serve_url
        if self._http is None:
            self._http = make_http_client(
                self.settings.dispatcher_concurrency,
                allow_private=allow_private,
                public_url=own_url,
            )
        self._pool = ProviderPool(
            http=self._http,
            public_url=own_url,
            adapters=self._adapters,
            allow_private=allow_private,
        )
        self._spawn("claim", self._claim_loop)
        self._spawn("flush", self._flush_loop)
        self._spawn("reclaim", self._reclaim_loop)
        self._spawn("gauges", self._gauge_loop)
        if self.db.dialect == "postgresql":
            self._spawn("listen", self._listen_loop)
        self._monitor = asyncio.create_task(self._watch(), name="dispatcher-monitor")
        log.info(
            "dispatcher started (concurrency %d, batch %d, lease %.0fs)",
            self.settings.dispatcher_concurrency,
            self.settings.dispatcher_batch,
            self.settings.send_lease_s,
        )

    async def stop(self) -> None:
        """Stop claiming, let sends in flight finish (up to `STOP_GRACE_S`), write their outcomes."""
        if self._monitor is None:
            return
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(), name="dispatcher-shutdown")
        await asyncio.shield(self._shutdown_task)

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    def _spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = self.supervisor.spawn(
            f"dispatcher-{name}", loop, restart=False, on_crash=self._crashed
        )

    def _crashed(self, _name: str, exc: BaseException) -> None:
        self.error = self.error or exc

    async def _watch(self) -> None:
        """A side task that ends while the dispatcher runs is a failure: record it and stop."""
        done, _ = await asyncio.wait(self._tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        if self._stop.is_set():
            return
        task = next(iter(done))
        exc = None if task.cancelled() else task.exception()
        self.error = self.error or exc or RuntimeError(f"{task.get_name()} ended unexpectedly")
        log.error("dispatcher side task %s failed; stopping", task.get_name(), exc_info=self.error)
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(), name="dispatcher-shutdown")

    async def _shutdown(self) -> None:
        self._stop.set()
        try:
            claim = self._tasks.get("claim")
            if claim is not None:
                await asyncio.wait([claim])
            if self._sends:
                _, late = await asyncio.wait(self._sends, timeout=STOP_GRACE_S)
                for task in late:  # their messages stay `sending` and come back after the lease
                    task.cancel()
                if late:
                    await asyncio.wait(late)
            self._closing = True
            self._outcomes_ready.set()
            flush = self._tasks.get("flush")
            if flush is not None:
                await asyncio.wait([flush], timeout=STOP_GRACE_S)
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            if self._monitor is not None and self._monitor is not asyncio.current_task():
                self._monitor.cancel()
                await asyncio.gather(self._monitor, return_exceptions=True)
            if self._pool is not None:
                await self._pool.aclose()
            if self._own_http and self._http is not None:
                await self._http.aclose()
        finally:
            self.stopped.set()
            log.info("dispatcher stopped (%d sent, %d failed)", self.stats.sent, self.stats.failed)

    async def _idle(self, seconds: float) -> None:
        """Sleep until woken (NOTIFY or in-process), stopped, or `seconds` pass."""
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _retrying(self, what: str, attempt: int, exc: BaseException) -> None:
        delay = min(DB_RETRY_MAX_S, 0.25 * 2**attempt)
        log.warning("dispatcher %s: database unavailable (%s); retrying in %.1fs", what, exc, delay)
        await self._idle(delay)

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        limit = self.settings.dispatcher_batch
        while not self._stop.is_set():
            self._wake.clear()
            try:
                batch, routes, wait = await self._claim(limit)
            except Exception as exc:
                if not transient_db_error(exc):
                    raise
                await self._retrying("claim", failures, exc)
                failures += 1
                continue
            failures = 0
            if batch:
                await self._launch(batch, routes)
            if wait is not None:
                await self._idle(wait)

    async def _claim(self, limit: int) -> tuple[list[Claimed], Routes, float | None]:
        """One transaction: claim, check suppression (suppressed ones end here), load providers.
        Returns the messages to send, their routes, and how long to idle (None: claim again now)."""
        assert self._pool is not None
        async with self.db.transaction() as s:
            claimed = await claims.claim_due(s, limit=limit, lease_s=self.settings.send_lease_s, record=False)
            wait = None if len(claimed) == limit else await self._until_next_due(s)
            if not claimed:
                return [], Routes(), wait
            blocked = await self.suppression.suppressed(s, [(m.workspace_id, m.to_address) for m in claimed])
            opted_out = await consent.opted_out_scopes(
                s, [(m.contact_id, m.channel) for m in claimed if m.category == MARKETING and m.contact_id]
            )
            ready: list[Claimed] = []
            gone: list[Outcome] = []
            for m in claimed:
                scopes = (
                    opted_out.get((m.contact_id, m.channel), NO_SCOPES)
                    if m.category == MARKETING and m.contact_id is not None
                    else NO_SCOPES
                )
                if (m.workspace_id, m.to_address) in blocked:
                    gone.append(Outcome(m, MessageStatus.suppressed, SUPPRESSED_REASON))
                elif ALL_SCOPE in scopes:
                    gone.append(Outcome(m, MessageStatus.suppressed, OPTED_OUT_REASON))
                else:
                    ready.append(dataclasses.replace(m, opted_out_at=scopes) if scopes else m)
            held = await quiet.holds(s, ready, now=utcnow())
            if held:
                held_ids = {m.id for m, _, _ in held}
                ready = [m for m in ready if m.id not in held_ids]
            await record_applied(s, [m.change(MessageStatus.sending) for m in ready])
            if gone:
                await claims.finish(s, gone)
            await claims.hold(s, held)
            routes = await self._pool.load(s, {m.workspace_id for m in ready}) if ready else Routes()
        self.stats.claimed += len(claimed)
        self.stats.suppressed += len(gone)
        self.stats.held += len(held)
        return ready, routes, wait

    async def _until_next_due(self, session: AsyncSession) -> float:
        poll = self.settings.dispatcher_poll_s
        due = await claims.next_due(session)
        if due is None:
            return poll
        return min(poll, max(MIN_IDLE_S, (due - utcnow()).total_seconds()))

    async def _launch(self, batch: list[Claimed], routes: Routes) -> None:
        for i, m in enumerate(batch):
            if self._stop.is_set():
                self._release(batch[i:])
                return
            await self._slots.acquire()
            task = asyncio.create_task(
                self._send(m, routes.for_message(m.workspace_id, m.channel, m.via_provider_id))
            )
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _release(self, unsent: list[Claimed]) -> None:
        """Claimed but not started when asked to stop: back to the queue, attempt not counted."""
        now = utcnow()
        for m in unsent:
            self._record(
                Outcome(m, MessageStatus.queued, "worker stopping", next_attempt_at=now, refund=True)
            )

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, m: Claimed, routes: list[Route]) -> None:
        self.stats.in_flight += 1
        # Every line logged for this send (here, in adapters) carries the creating request's id.
        with request_context(m.request_id):
            try:
                outcome = await self._deliver(m, routes)
            except (
                Exception
            ) as exc:  # a bug in an adapter or below: logged, and retried like a transient failure
                log.exception("sending message %d failed unexpectedly", m.id, extra={"message_id": m.id})
                outcome = self._retry_later(m, f"internal error: {type(exc).__name__}: {exc}", None)
            finally:
                self.stats.in_flight -= 1
                self._slots.release()
            log.debug(
                "message %d: %s%s",
                m.id,
                outcome.status.value,
                f" ({outcome.reason})" if outcome.reason else "",
                extra={"message_id": m.id, "workspace_id": m.workspace_id},
            )
        self._record(outcome)

    async def _deliver(self, m: Claimed, routes: list[Route]) -> Outcome:
        if not routes:
            return Outcome(m, MessageStatus.failed, f"no enabled provider for the {m.channel} channel")
        errors: list[TransientError] = []
        problems: list[str] = []
        wait_hint: float | None = None
        refused_by_consent = False
        msg = outgoing(m, self.settings.secret_key, self.links)
        for route in routes:
            if route.adapter is None:
                problems.append(route.problem or f"provider {route.name!r} is unusable")
                continue
            if m.opted_out_at and consent.blocks(m.opted_out_at, route.adapter.sender(msg)):
                refused_by_consent = True  # the recipient opted out of this route's number
                continue
            breaker = self.circuits[route.provider_id]
            if not breaker.allow():
                wait_hint = _min(wait_hint, breaker.retry_in())
                continue
            if route.send_rate:
                bucket = send_rate_bucket(route.send_rate)
                delay = await self.rate.reserve(f"provider:{route.provider_id}", bucket)
                if delay > self.max_rate_wait_s:
                    await self.rate.cancel(f"provider:{route.provider_id}", bucket)
                    breaker.abandon()
                    wait_hint = _min(wait_hint, delay)
                    continue
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                result = await route.adapter.send(msg)
            except PermanentError as exc:
                breaker.success()  # it answered: the provider is up, the message is bad
                sender = route.adapter.sender(msg) or ""
                if scope := keywords.provider_opt_out_scope(route.kind, exc.code, sender):
                    # The recipient sent STOP to Twilio: an opt-out, recorded with the outcome.
                    return Outcome(
                        m,
                        MessageStatus.suppressed,
                        OPTED_OUT_REASON,
                        provider_id=route.provider_id,
                        provider_kind=route.kind,
                        opt_out_scope=scope,
                    )
                return Outcome(
                    m,
                    MessageStatus.failed,
                    exc.reason,
                    provider_id=route.provider_id,
                    provider_kind=route.kind,
                )
            except TransientError as exc:
                if exc.status == 429:
                    breaker.pause(exc.retry_after if exc.retry_after is not None else self.retry.backoff(1))
                else:
                    breaker.failure()
                errors.append(exc)
                continue
            except Exception as exc:  # a bug in the adapter: logged, counted against it, then like a 5xx
                log.exception(
                    "provider %s (#%d) raised while sending message %d", route.name, route.provider_id, m.id
                )
                breaker.failure()
                errors.append(
                    TransientError(f"internal error in the {route.kind} adapter: {type(exc).__name__}")
                )
                continue
            breaker.success()
            lag = (utcnow() - m.send_at).total_seconds()
            self.stats.lag_last_s = lag
            self.stats.lag_sum_s += lag
            self.stats.lag_max_s = max(self.stats.lag_max_s, lag)
            return Outcome(
                m,
                MessageStatus.sent,
                provider_id=route.provider_id,
                provider_kind=route.kind,
                provider_message_id=result.provider_message_id,
            )
        if errors:
            retry_after = min((e.retry_after for e in errors if e.retry_after is not None), default=None)
            reason = "; ".join(e.reason for e in errors)
            return self._retry_later(m, reason, retry_after)
        if wait_hint is not None:  # every usable provider is open, paused or at its rate: not an attempt
            self.stats.deferred += 1
            at = utcnow() + dt.timedelta(seconds=max(wait_hint, 0.05))
            return Outcome(m, MessageStatus.queued, "waiting for a provider", next_attempt_at=at, refund=True)
        if refused_by_consent:  # no provider was tried: every usable one sends from a number opted out of
            return Outcome(m, MessageStatus.suppressed, OPTED_OUT_REASON)
        return Outcome(m, MessageStatus.failed, "; ".join(problems))

    def _retry_later(self, m: Claimed, reason: str, retry_after: float | None) -> Outcome:
        if self.retry.exhausted(m.attempts):
            return Outcome(m, MessageStatus.failed, f"gave up after {m.attempts} attempts: {reason}")
        delay = self.retry.delay(m.attempts, retry_after)
        at = utcnow() + dt.timedelta(seconds=delay)
        return Outcome(m, MessageStatus.queued, reason, next_attempt_at=at)

    # -- writing outcomes --------------------------------------------------------------------

    def _record(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._outcomes_ready.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._outcomes_ready.wait()
            if not self._closing:
                await asyncio.sleep(FLUSH_LINGER_S)
            self._outcomes_ready.clear()
            batch, self._outcomes = self._outcomes, []
            for i in range(0, len(batch), FLUSH_CHUNK):
                await self._write(batch[i : i + FLUSH_CHUNK])
            if self._closing and not self._outcomes:
                return

    async def _write(self, outcomes: list[Outcome]) -> None:
        """Write a batch of outcomes. If the batch's statement fails (not the database being away),
        each outcome is written on its own so a bad one fails alone, and one that still cannot be
        written is written without what the provider returned. Never raises: a flush error must not
        stop the worker (the other workspaces' outcomes in the batch would be sent again)."""
        try:
            changes = await self._finish(outcomes)
        except Exception:
            log.exception(
                "writing %d outcomes in one statement failed; writing them one by one", len(outcomes)
            )
            changes = []
            for o in outcomes:
                changes.extend(await self._write_alone(o))
        self.stats.fenced += len(outcomes) - len(changes)
        for c in changes:
            if c.status == MessageStatus.sent:
                self.stats.sent += 1
            elif c.status == MessageStatus.failed:
                self.stats.failed += 1
            elif c.status == MessageStatus.queued:
                self.stats.retried += 1
            elif c.status == MessageStatus.suppressed:  # at send time (claim time counts its own)
                self.stats.suppressed += 1
        if any(c.status == MessageStatus.queued for c in changes):
            self._wake.set()  # a retry may be due before the next idle timeout

    async def _write_alone(self, o: Outcome) -> list[AppliedChange]:
        bare = dataclasses.replace(
            o, reason="the provider's answer could not be stored", provider_message_id=None
        )
        for attempt in (o, bare):
            try:
                return await self._finish([attempt])
            except Exception:
                log.exception(
                    "writing the outcome of message %d failed",
                    o.message.id,
                    extra={"message_id": o.message.id},
                )
        return []  # left in `sending`: the lease takes it back

    async def _finish(self, outcomes: list[Outcome]) -> list[AppliedChange]:
        """`claims.finish` in a transaction, riding out the database being away (until the lease
        would pass, when stopping)."""
        attempt = 0
        deadline = time.monotonic() + self.settings.send_lease_s
        while True:
            try:
                async with self.db.transaction() as s:
                    changes = await claims.finish(s, outcomes)
                    await keywords.record_provider_opt_outs(s, outcomes, changes)
                    return changes
            except Exception as exc:
                if not transient_db_error(exc):
                    raise
                if self._closing and time.monotonic() > deadline:
                    log.error("dropping %d outcomes at shutdown: database unavailable", len(outcomes))
                    return []
                await self._retrying("flush", attempt, exc)
                attempt += 1

    # -- side loops --------------------------------------------------------------------------

    async def _reclaim_loop(self) -> None:
        period = min(10.0, max(0.25, self.settings.send_lease_s / 4))
        failures = 0
        while not self._stop.is_set():
            try:
                async with self.db.transaction() as s:
                    changes = await claims.reclaim_expired(s, max_attempts=self.settings.max_attempts)
                failures = 0
            except Exception as exc:
                if not transient_db_error(exc):
                    raise
                await self._retrying("reclaim", failures, exc)
                failures += 1
                continue
            if changes:
                self.stats.reclaimed += len(changes)
                log.warning("took back %d messages from an expired lease", len(changes))
                self._wake.set()
            await _sleep_unless(self._stop, period)

    async def _gauge_loop(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.db.sessions() as s:
                    depth, oldest = await claims.backlog(s)
            except Exception as exc:
                if not transient_db_error(exc):
                    raise
            else:
                self.stats.queue_depth = depth
                self.stats.oldest_due_s = (
                    0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
                )
            await _sleep_unless(self._stop, GAUGE_INTERVAL_S)

    async def _listen_loop(self) -> None:
        """LISTEN on the dispatch channel (a wake-up per NOTIFY; `_idle`'s timeout is the poll)."""
        from server.messages.wake import DISPATCH_CHANNEL

        await pg_listen(self.db.url, DISPATCH_CHANNEL, lambda _payload: self._wake.set())


async def _sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `event` was set meanwhile."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)

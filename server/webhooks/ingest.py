"""Group commit for webhook deliveries, and a short-lived cache of provider connections.

A delivery is a provider's status events (`server/webhooks/service.py`), its customers' inbound
messages (`server/conversations/service.py`), or both (WhatsApp sends them in one webhook); every
batch emits all its events with one `emit_many` per workspace, so one lock of the workspace's event
counter per batch. Each delivery is answered only after its events are committed, but concurrent
deliveries share one transaction: whoever holds the lock applies everything waiting, and those that queued behind
it find their result ready. One writer at a time per process also keeps transactions from
queueing on each other's row locks (the workspace's event counter, the messages) while the event
loop is busy: one transaction per delivery under load turned into a lock convoy at ~200/s."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from starlette.applications import Starlette

from server.consent.inbound import InboundConsent
from server.conversations import service as conversations
from server.conversations.inbound import Inbound
from server.db import Database
from server.providers.models import Provider
from server.settings import Settings
from server.state import services_of
from server.webhooks import replay
from server.webhooks.parse import ProviderEvent
from server.webhooks.service import ApplyResult, Connection, apply_batch
from server.webhooks.verify import SignedOnce

log = logging.getLogger("switchboard.webhooks")

# Transactions in flight at once. Measured (bench/webhooks, `--writers`): a second writer mostly
# waits on the first's lock on the workspace's event counter, and batches get smaller; one is as fast
# or faster. More than one only helps deliveries for different workspaces.
WRITERS = 1
# A batch this large is split: its statements and its transaction stay bounded.
MAX_BATCH_EVENTS = 5000
# How long a connection's row (keys, kind) is trusted. A key rotated meanwhile still works at once:
# a delivery that fails verification against a cached row is checked again against one read at most
# REVERIFY_AGE_S ago (so a flood of forged requests costs at most one read a second per connection).
PROVIDER_TTL_S = 5.0
REVERIFY_AGE_S = 1.0
# An id with no connection is remembered as missing this long: a flood of requests to unknown ids
# costs one read per id and interval, not one per request. A connection created meanwhile (ids
# are never reused) gets its first deliveries 404 for at most this long; providers retry.
MISSING_TTL_S = 5.0
CACHE_MAX = 10_000
# Remembered Mailgun tokens older than their window are deleted at most this often.
PRUNE_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A snapshot of a provider connection: what receiving its webhooks needs."""

    id: int
    workspace_id: int
    kind: str
    config: Mapping[str, Any]
    webhook_key: str
    loaded_at: float


class ProviderCache:
    def __init__(self, db: Database, ttl_s: float = PROVIDER_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._rows: dict[int, ProviderInfo] = {}
        self._missing: dict[int, float] = {}  # id → when it was found missing (monotonic)

    async def get(self, provider_id: int, *, max_age_s: float | None = None) -> ProviderInfo | None:
        """The connection, read again when the cached row is older than `max_age_s` (default: the TTL)."""
        now = time.monotonic()
        cached = self._rows.get(provider_id)
        if cached is not None and now - cached.loaded_at < (self.ttl_s if max_age_s is None else max_age_s):
            return cached
        missing_since = self._missing.get(provider_id)
        if missing_since is not None and now - missing_since < MISSING_TTL_S:
            return None
        async with self.db.transaction() as session:
            row = await session.get(Provider, provider_id)
            if row is None:
                self._rows.pop(provider_id, None)
                if len(self._missing) > CACHE_MAX:
                    self._missing.clear()
                self._missing[provider_id] = now
                return None
            info = ProviderInfo(
                row.id, row.workspace_id, row.kind, dict(row.config or {}), row.webhook_key, now
            )
        if len(self._rows) > CACHE_MAX:
            self._rows.clear()
        self._rows[provider_id] = info
        return info


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one delivery did: to its status events, and to its inbound messages."""

    events: ApplyResult
    inbound: conversations.Received


@dataclass(slots=True)
class _Delivery:
    provider: Connection
    events: Sequence[ProviderEvent]
    inbound: Sequence[Inbound] = ()
    signed: SignedOnce | None = None  # a token to remember (Mailgun)
    taken: bool = False  # in a batch being applied
    done: asyncio.Future[Delivered] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def size(self) -> int:
        return len(self.events) + len(self.inbound)


class Ingest:
    """Applies deliveries in shared transactions; `submit` returns once its own are committed.

    At most `writers` transactions run at once. While deliveries keep coming, a writer keeps its
    database connection from one batch to the next (no pool check-out and liveness ping per
    transaction, a third of a batch's time when measured); it goes back to the pool once the queue
    is empty, or after any error."""

    def __init__(
        self,
        db: Database,
        *,
        secret: str = "",
        writers: int | None = None,
        max_batch_events: int = MAX_BATCH_EVENTS,
        on_stored: conversations.OnStored | None = None,
    ) -> None:
        self.db = db
        self.secret = secret  # checks the signed reply addresses of inbound email
        self.on_stored = on_stored  # sees each new inbound message in its transaction (consent)
        self.max_batch_events = max_batch_events
        self._waiting: list[_Delivery] = []
        self._writers_count = writers or WRITERS
        self._writers = asyncio.Semaphore(self._writers_count)
        self._held: list[AsyncConnection] = []
        self._next_prune = 0.0

    async def submit(
        self, provider: Connection, events: Sequence[ProviderEvent], *, signed: SignedOnce | None = None
    ) -> ApplyResult:
        """Apply a verified delivery of status events (see `deliver`)."""
        return (await self.deliver(provider, events, signed=signed)).events

    async def deliver(
        self,
        provider: Connection,
        events: Sequence[ProviderEvent] = (),
        *,
        inbound: Sequence[Inbound] = (),
        signed: SignedOnce | None = None,
    ) -> Delivered:
        """Apply a verified delivery: status events and inbound messages. Raises
        `replay.ReplayedSignature` when `signed` was seen before with other data (nothing of
        this delivery is recorded)."""
        delivery = _Delivery(provider, events, inbound, signed)
        self._waiting.append(delivery)
        try:
            while not delivery.taken:
                async with self._writers:
                    if not delivery.taken:
                        await self._run(self._take())
        except asyncio.CancelledError:
            if not delivery.taken:  # abandoned before any writer took it: the provider will retry
                self._waiting.remove(delivery)
                if not self._waiting:
                    await self._release(len(self._held))
            raise
        # Taken by this task or by another writer: wait for that batch (shielded, so a cancelled
        # request does not cancel the result the writer is about to set).
        return await asyncio.shield(delivery.done)

    def _take(self) -> list[_Delivery]:
        batch: list[_Delivery] = []
        size = 0
        while self._waiting and (not batch or size + self._waiting[0].size <= self.max_batch_events):
            delivery = self._waiting.pop(0)
            delivery.taken = True
            batch.append(delivery)
            size += delivery.size
        return batch

    async def _run(self, batch: list[_Delivery]) -> None:
        conn = self._held.pop() if self._held else await self.db.engine.connect()
        keep = False
        try:
            keep = await self._apply(conn, batch)
        finally:
            if keep:
                self._held.append(conn)
            else:
                await conn.close()
            # Held connections beyond what the queue can use go back to the pool; with nothing
            # queued, all of them: none stays checked out while the endpoint is idle.
            await self._release(len(self._held) - min(len(self._waiting), self._writers_count))

    async def _release(self, count: int) -> None:
        surplus = [self._held.pop() for _ in range(max(0, count))]
        for conn in surplus:
            await conn.close()

    async def _apply(self, conn: AsyncConnection, batch: list[_Delivery]) -> bool:
        """Apply a batch on `conn`; True when `conn` is fit for the next one."""
        try:
            async with AsyncSession(bind=conn, expire_on_commit=False) as session, session.begin():
                allowed = await replay.claim(session, [(d.provider.id, d.signed) for d in batch])
                applied = [d for d, ok in zip(batch, allowed, strict=True) if ok]
                received, inbound_events = await conversations.receive(
                    session,
                    secret=self.secret,
                    arrivals=[
                        conversations.Arrival(d.provider.workspace_id, d.provider.id, d.inbound)
                        for d in applied
                        if d.inbound
                    ],
                    lock_order={d.provider.workspace_id for d in applied},
                    on_stored=self.on_stored,
                )
                results = await apply_batch(
                    session, [(d.provider, d.events) for d in applied], emit_also=inbound_events
                )
                if any(d.signed is not None for d in batch) and time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_EVERY_S
                    await replay.prune(session)
        except asyncio.CancelledError:
            # The writer's own request was cancelled mid-transaction (rolled back): the others
            # in its batch must not wait for ever.
            for delivery in batch:
                if not delivery.done.done():
                    delivery.done.set_exception(RuntimeError("webhook batch interrupted"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].done.done():
                    batch[0].done.set_exception(exc)
                return False
            # One delivery must not fail the others (say, a body the database refuses to store, or a
            # connection lost): each is tried again on its own, on a connection from the pool.
            log.warning(
                "webhook batch of %d failed (%s); applying one by one", len(batch), exc.__class__.__name__
            )
            for delivery in batch:
                async with self.db.engine.connect() as fresh:
                    await self._apply(fresh, [delivery])
            return False
        refused = [d for d, ok in zip(batch, allowed, strict=True) if not ok]
        for delivery in refused:
            if not delivery.done.done():
                delivery.done.set_exception(replay.ReplayedSignature())
        counts = iter(received)
        for delivery, result in zip(applied, results, strict=True):
            inbound = next(counts) if delivery.inbound else conversations.Received(0, 0)
            if not delivery.done.done():
                delivery.done.set_result(Delivered(result, inbound))
        return True


@dataclass(eq=False)
class Webhooks:
    """What the provider webhook routes share in one web process (`Services.webhooks`)."""

    providers: ProviderCache
    ingest: Ingest

    @classmethod
    def create(cls, settings: Settings, db: Database) -> Webhooks:
        return cls(
            ProviderCache(db),
            Ingest(db, secret=settings.secret_key, on_stored=InboundConsent(settings)),
        )


def for_app(app: Starlette) -> tuple[ProviderCache, Ingest]:
    """The web process's provider cache and group-commit queue (built by `build_services`)."""
    webhooks = services_of(app).webhooks
    if webhooks is None:  # a process built without the web side serves no webhooks
        raise RuntimeError("this process does not serve provider webhooks")
    return webhooks.providers, webhooks.ingest

"""The composition root: what one process owns, built once at start-up and handed down typed.

`build_services()` makes every long-lived component of a web process (`create_app`) or a worker
(`run_worker`); request handlers reach them as `ctx.services.<field>` and never construct one.
Kept on `app.state.services` (read back typed by `server.state.services_of`), never in module globals,
so tests can run many apps side by side.

    field        what                                         web   worker  embedded `serve`
    db, tokens   database engine, JWT codec                   yes   yes     yes
    replica      read replica for reports/exports             when SWITCHBOARD_DATABASE_REPLICA_URL is set
    redis        THE redis.asyncio client of the process      when SWITCHBOARD_REDIS_URL is set
    metrics      the Prometheus registry                      yes   yes     yes
    ratelimits   API/login token buckets                      yes   yes     yes
    caches       contact/template row caches (follow the hub) yes   yes     yes
    realtime     relay, hub, presence, /ws and long-poll      yes   no      yes
    board_feed   board.counters events (where the relay leads) yes   no      yes
    importer     contact CSV imports                          yes   yes     yes
    bulk         bulk actions on a search's contacts          yes   yes     yes
    sso          OpenID Connect clients, one per workspace    yes   yes     yes
    webhooks     provider webhooks: connection cache, group commit  yes   no      yes
    campaigns    campaign expansions in the background        yes   yes     yes
    dispatcher   claims and sends messages                    no    yes     yes
    deliverer    outgoing webhooks                            no    yes     yes
    reports      the daily report job                         no    yes     yes

`components` is the start order (stopped in reverse); each supervised component's loops feed
`check_ready()`, so a crashed loop turns `/readyz` red until it is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from realtime.lifecycle import Component
from server.auth.tokens import TokenCodec
from server.cache import Caches
from server.contacts.bulk import BulkActions, BulkConfig
from server.contacts.importer import ImportConfig, Importer
from server.db import Database
from server.metrics import ComponentCollector, Metrics
from server.ratelimit import RateLimits, make_rate_limits
from server.settings import Settings
from server.sso.clients import SsoClients

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from realtime.service import Realtime
    from server.endpoints.deliverer import Deliverer
    from server.messages.board_feed import BoardFeed
    from server.messages.campaigns import CampaignRunner
    from server.messages.dispatcher import Dispatcher
    from server.reports.job import ReportJob
    from server.webhooks.ingest import Webhooks

log = logging.getLogger("switchboard")


@dataclass(eq=False)
class Services:
    settings: Settings
    db: Database
    tokens: TokenCodec
    redis: Redis | None
    metrics: Metrics
    ratelimits: RateLimits
    caches: Caches
    importer: Importer
    bulk: BulkActions
    sso: SsoClients
    campaigns: CampaignRunner = field(init=False)
    webhooks: Webhooks | None = None
    realtime: Realtime | None = None
    board_feed: BoardFeed | None = None
    dispatcher: Dispatcher | None = None
    deliverer: Deliverer | None = None
    reports: ReportJob | None = None
    components: list[Component] = field(default_factory=list)
    # Reports and exports read here when SWITCHBOARD_DATABASE_REPLICA_URL is set (see `reads`).
    replica: Database | None = None
    # Set after a commit that queued send-now messages; an in-process dispatcher waits on it.
    dispatch_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def create(cls, settings: Settings) -> Services:
        """The core alone (no realtime layer, no background jobs): for CLI commands and tests."""
        return build_services(settings, web=False, jobs=False)

    @property
    def reads(self) -> Database:
        """Where long reads that may lag a little go (reports, exports): the replica, else `db`."""
        return self.replica or self.db

    async def access_ended(
        self, *, api_key_id: int | None = None, user_id: int | None = None, session_ids: Iterable[str] = ()
    ) -> None:
        """After committing a revocation (a key, one or more sign-ins, every sign-in of a user):
        the sockets, streams and long-polls standing on it end now on every instance, not at
        their next access check (realtime/guard.py). A process without the realtime layer holds
        no connections, and the others' checks are the fallback."""
        if self.realtime is not None:
            await self.realtime.access_ended(api_key_id=api_key_id, user_id=user_id, session_ids=session_ids)

    def poke(self, workspace_id: int | None = None) -> None:
        """After committing events in this process: publish them now (the relay's fast path)."""
        if self.realtime is not None:
            self.realtime.poke(workspace_id)

    async def start(self) -> None:
        for c in self.components:
            await c.start()

    async def stop(self) -> None:
        for c in reversed(self.components):
            try:
                await c.stop()
            except Exception:
                log.exception("stopping %r failed", c)
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()
        if self.replica is not None:
            await self.replica.dispose()

    def health(self) -> dict[str, str]:
        """Every supervised loop that is down, by name."""
        out: dict[str, str] = {}
        for c in self.components:
            out.update(c.health())
        return out

    async def check_ready(self) -> dict[str, str]:
        """Each dependency and each down loop: "ok" or the reason it is not."""
        from sqlalchemy import text

        out: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                async with self.db.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            out["database"] = "ok"
        except Exception as exc:
            out["database"] = f"unreachable: {exc.__class__.__name__}"
        if self.redis is not None:
            try:
                async with asyncio.timeout(2):
                    await self.redis.ping()
                out["redis"] = "ok"
            except Exception as exc:
                out["redis"] = f"unreachable: {exc.__class__.__name__}"
        for name, why in self.health().items():
            out[name] = f"down: {why}"
        return out


def _redis_client(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    from realtime.redisconn import connect_redis

    return connect_redis(settings.redis_url, client_name=f"switchboard:{settings.redis_prefix}")


def build_services(settings: Settings, *, web: bool, jobs: bool) -> Services:
    """Every component of one process, built once. `web`: the realtime layer (relay, hub,
    presence, /ws); `jobs`: dispatcher, deliverer and report job (the worker, or `serve`
    with its embedded worker)."""
    from realtime.service import Realtime
    from server import realtime_policy
    from server.endpoints.deliverer import Deliverer, DelivererConfig
    from server.events.log import SqlEventLog
    from server.messages.board_feed import BoardFeed
    from server.messages.campaigns import CampaignRunner
    from server.messages.dispatcher import Dispatcher
    from server.reports.job import ReportJob
    from server.webhooks.ingest import Webhooks

    db = Database.from_settings(settings)
    redis = _redis_client(settings)
    metrics = Metrics()
    caches = Caches(settings, metrics)
    services = Services(
        settings=settings,
        db=db,
        tokens=TokenCodec(settings.secret_key, settings.access_token_ttl_s),
        redis=redis,
        metrics=metrics,
        ratelimits=make_rate_limits(settings, redis),
        caches=caches,
        importer=Importer(db, ImportConfig.from_settings(settings)),
        bulk=BulkActions(db, BulkConfig.from_settings(settings)),
        sso=SsoClients(allow_private=settings.allow_private_endpoints),
    )
    if settings.database_replica_url:
        services.replica = Database.from_settings(settings, settings.database_replica_url)
    metrics.registry.register(ComponentCollector(services, queue=False))
    limits = services.ratelimits
    services.campaigns = CampaignRunner(services)
    services.importer.on_commit = services.poke
    services.bulk.on_commit = services.poke
    if web:
        rt = Realtime(
            settings,
            db,
            authenticate=realtime_policy.authenticate,  # users, and API keys with events:read
            log=SqlEventLog(),
            redis=redis,
            prefix=settings.redis_prefix,
            access_check=realtime_policy.access_check(db),
            op_budget=realtime_policy.op_budget(limits.limiter, settings) if limits.enabled else None,
        )
        caches.follow(rt.hub, rt.backend)
        services.webhooks = Webhooks.create(settings, db)
        services.realtime = rt
        services.components.append(rt)
        relay = rt.relay
        if relay is not None:
            services.board_feed = BoardFeed(db, leading=lambda: relay.leading, on_change=services.poke)
            services.components.append(services.board_feed)
    if jobs:
        services.dispatcher = Dispatcher(services)
        services.reports = ReportJob(
            db, on_change=services.poke, audit_retention_days=settings.audit_retention_days
        )
        services.deliverer = Deliverer(db, DelivererConfig(allow_private=settings.allow_private_endpoints))
        services.components += [services.dispatcher, services.reports, services.deliverer]
    # Stopped first: background work that writes through the components above.
    services.components += [services.importer, services.bulk, services.campaigns]
    return services

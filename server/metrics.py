"""Prometheus metrics, on a registry owned by the app (never the process-global one, so tests
can build many apps).

Other modules get the app's metrics as `services.metrics` and update the objects here:

    m = services_of(request.app).metrics
    m.webhook_events.labels(provider="mailgun", outcome="applied").inc()

Figures that live in the database (messages by status, the dispatcher's queue) are read at
scrape time, so every web instance reports the same truth whichever worker did the work."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.auth.principal import require_bearer_secret
from server.db import utcnow
from server.messages.models import Message as MessageRow
from server.state import services_of

if TYPE_CHECKING:
    from server.services import Services

# Buckets in seconds: API calls sit in the low milliseconds; long-polls wait up to a minute.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LONGPOLL_ROUTES = frozenset({"/api/v1/events", "/api/v1/events/stream"})


class Metrics:
    """Every metric the app exports. Names and meanings are listed in docs/operations.md."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_latency = Histogram(
            "switchboard_http_request_duration_seconds",
            "HTTP request latency by route template (not raw path).",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.websockets_open = Gauge(
            "switchboard_websockets_open", "WebSocket connections open on this instance.", registry=r
        )
        self.longpolls_open = Gauge(
            "switchboard_longpolls_open",
            "Long-poll and SSE requests waiting on this instance.",
            ["route"],
            registry=r,
        )
        self.rate_limited = Counter(
            "switchboard_rate_limit_rejections",
            "Requests answered 429 by the API rate limiter, by bucket.",
            ["bucket"],
            registry=r,
        )
        self.cache_requests = Counter(
            "switchboard_cache_requests",
            "Cache look-ups by kind (contact, template) and result (hit, miss).",
            ["kind", "result"],
            registry=r,
        )
        self.webhook_events = Counter(
            "switchboard_webhook_events",
            "Inbound provider webhook events by provider kind and outcome "
            "(applied, duplicate, unmatched: recorded without a known message).",
            ["provider", "outcome"],
            registry=r,
        )
        self.webhook_rejections = Counter(
            "switchboard_webhook_rejections",
            "Inbound provider webhook requests refused, by provider kind and reason (signature, malformed).",
            ["provider", "reason"],
            registry=r,
        )
        self.messages = Gauge(
            "switchboard_messages",
            "Messages in the database by status and provider kind (read at scrape time).",
            ["status", "provider"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "switchboard_dispatch_queue_depth",
            "Messages due now and waiting for a dispatcher (queued or scheduled, due time passed).",
            registry=r,
        )
        self.queue_lag = Gauge(
            "switchboard_dispatch_queue_lag_seconds",
            "How long the oldest due message has been waiting (0 when none is due).",
            registry=r,
        )
        self.scrape_errors = Counter(
            "switchboard_metrics_scrape_errors",
            "Scrapes where the database figures could not be read.",
            registry=r,
        )

    async def refresh_from_db(self, db: Any) -> None:
        """Read the database-backed gauges (messages by status/provider, queue depth and lag)."""
        from server.messages.claims import backlog  # the dispatcher's own definition of "due"

        now = utcnow()
        async with db.transaction() as s:
            by_status = (
                await s.execute(
                    select(MessageRow.status, MessageRow.provider_kind, func.count()).group_by(
                        MessageRow.status, MessageRow.provider_kind
                    )
                )
            ).all()
            depth, oldest = await backlog(s)
        self.messages.clear()
        for status, provider, count in by_status:
            self.messages.labels(status=status, provider=provider or "none").set(count)
        self.queue_depth.set(depth)
        self.queue_lag.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


OUTCOMES = ("claimed", "sent", "failed", "retried", "deferred", "suppressed", "reclaimed", "fenced")


class ComponentCollector(Collector):
    """Reads the counters of the dispatchers (`Dispatcher.stats`) and outgoing-webhook deliverers
    (`Deliverer.outcomes`) running in this process at scrape time; nothing for absent ones."""

    def __init__(self, services: Services, *, queue: bool) -> None:
        self.services = services
        self.queue = queue  # also the queue figures the dispatcher measures (the worker's exporter)

    def _stats(self) -> list[Any]:
        from server.messages.dispatcher import DispatchStats

        found = (getattr(c, "stats", None) for c in self.services.components)
        return [s for s in found if isinstance(s, DispatchStats)]

    def _deliveries(self) -> Iterator[Metric]:
        found = [getattr(c, "outcomes", None) for c in self.services.components]
        counters = [c for c in found if isinstance(c, collections.Counter)]
        if not counters:
            return
        family = CounterMetricFamily(
            "switchboard_endpoint_deliveries",
            "Outgoing webhook delivery attempts by the deliverer(s) of this process, by outcome.",
            labels=["outcome"],
        )
        for name in ("success", "failure", "gave_up"):
            family.add_metric([name], sum(c[name] for c in counters))
        yield family

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield from self._deliveries()
        if not stats:
            return
        outcomes = CounterMetricFamily(
            "switchboard_dispatcher_outcomes",
            "Messages handled by the dispatcher(s) of this process, by outcome.",
            labels=["outcome"],
        )
        for name in OUTCOMES:
            outcomes.add_metric([name], sum(getattr(s, name) for s in stats))
        yield outcomes
        yield GaugeMetricFamily(
            "switchboard_dispatcher_in_flight",
            "Provider sends in flight in this process.",
            value=sum(s.in_flight for s in stats),
        )
        if self.queue:
            yield GaugeMetricFamily(
                "switchboard_dispatch_queue_depth",
                "Messages due now and waiting for a dispatcher (as this worker last measured).",
                value=max(s.queue_depth for s in stats),
            )
            yield GaugeMetricFamily(
                "switchboard_dispatch_queue_lag_seconds",
                "How long the oldest due message has been waiting (as this worker last measured).",
                value=max(s.oldest_due_s for s in stats),
            )


class WorkerMetricsServer:
    """A component for `switchboard worker`: serves its dispatcher's figures on
    `http://host:port/metrics` (the web instances' /metrics cannot see another process)."""

    def __init__(self, services: Services, port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ComponentCollector(services, queue=True))
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: Any = None

    async def start(self) -> None:
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def health(self) -> dict[str, str]:
        return {}  # a thread of prometheus_client's, with no loop of ours to watch


async def metrics_endpoint(request: Request) -> Response:
    services = services_of(request.app)
    if services.settings.metrics_token:
        require_bearer_secret(request, services.settings.metrics_token)
    m = services.metrics
    try:
        await m.refresh_from_db(services.db)
    except Exception:
        m.scrape_errors.inc()
    realtime = services.realtime
    if realtime is not None:
        # Counted by the realtime layer itself: `serve` answers /ws before any middleware.
        m.websockets_open.set(len(realtime.connections))
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)


class _RouteNames:
    """Maps a matched endpoint back to its route template (`/api/v1/contacts/{contact_id}`)."""

    def __init__(self, app: Any) -> None:
        self.by_endpoint: dict[int, str] = {}
        for route in getattr(app, "routes", []):
            endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
            path = getattr(route, "path", None)
            if endpoint is not None and path is not None:
                self.by_endpoint.setdefault(id(endpoint), path or "/")

    def name(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "unmatched"
        return self.by_endpoint.get(id(endpoint), "unmatched")


class HttpMetrics:
    """Pure ASGI middleware: latency by route template, open WebSockets and waiting long-polls."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: _RouteNames | None = None

    def _route(self, scope: Scope) -> str:
        if self._routes is None:
            self._routes = _RouteNames(scope["app"])
        return self._routes.name(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = services_of(scope["app"]).metrics
        start = time.perf_counter()
        status = 500
        waiting: str | None = None
        path = scope["path"]
        if path in LONGPOLL_ROUTES:
            waiting = path
            m.longpolls_open.labels(route=path).inc()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if waiting is not None:
                m.longpolls_open.labels(route=waiting).dec()
            m.http_latency.labels(scope["method"], self._route(scope), str(status)).observe(
                time.perf_counter() - start
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Open sockets are read from the realtime layer at scrape time (see metrics_endpoint).
        await self.app(scope, receive, send)

"""The Starlette app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from realtime.backend import create_backend
from realtime.service import Realtime
from server import openapi, realtime_policy
from server.api import Router, all_operations, json_response
from server.apikeys.api import router as apikeys_router
from server.audit.api import router as audit_router
from server.auth.api import router as auth_router
from server.cache import caches_of
from server.contacts.api import router as contacts_router
from server.contacts.import_api import router as contacts_import_router
from server.contacts.merge_api import router as merge_router
from server.endpoints.api import router as endpoints_router
from server.errors import exception_handlers
from server.messages.api import router as messages_router
from server.metrics import HttpMetrics, metrics_endpoint
from server.middleware import BodyLimit, RequestId
from server.providers.api import router as providers_router
from server.ratelimit import rate_limits_of
from server.ratelimit_middleware import RateLimit
from server.reports.api import router as reports_router
from server.services import Services
from server.sessions.api import router as sessions_router
from server.settings import Settings, get_settings
from server.templates.api import router as templates_router
from server.webhooks.api import routes as webhook_routes
from ui.pages import routes as ui_routes

ROUTERS: list[Router] = [
    auth_router,
    contacts_router,
    contacts_import_router,
    templates_router,
    providers_router,
    messages_router,
    merge_router,
    endpoints_router,
    reports_router,
    audit_router,
    apikeys_router,
    sessions_router,
]


async def healthz(_request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks = await request.app.state.services.check_ready()
    ok = all(v == "ok" for v in checks.values())
    if ok:
        return json_response({"status": "ok", "checks": checks})
    body = {
        "type": "about:blank",
        "title": "Service unavailable",
        "status": 503,
        "detail": "A dependency is unreachable.",
        "checks": checks,
    }
    return json_response(body, 503, headers={"content-type": "application/problem+json"})


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Starlette:
    settings = settings or get_settings()
    services = services or Services.create(settings)
    caches = caches_of(services)
    backend = caches.follow(create_backend(settings.redis_url, prefix=settings.redis_prefix))
    limits = rate_limits_of(services)
    realtime = Realtime(
        settings,
        services.db,
        backend=backend,
        prefix=settings.redis_prefix,
        authenticate=realtime_policy.authenticate,
        access_check=realtime_policy.access_check(services.db),
        op_budget=realtime_policy.op_budget(limits.limiter, settings) if limits.enabled else None,
    )
    services.extras["realtime"] = realtime
    services.components += [caches, realtime]
    if settings.embedded_worker:
        from server.endpoints.deliverer import Deliverer, DelivererConfig
        from server.messages.dispatcher import Dispatcher
        from server.reports.job import ReportJob

        services.components.append(Dispatcher(services))
        services.components.append(
            ReportJob(
                services.db,
                on_change=realtime.poke,
                audit_retention_days=settings.audit_retention_days,
            )
        )
        # Outgoing webhooks; the worker process runs a Deliverer too.
        deliverer = Deliverer(services.db, DelivererConfig(allow_private=settings.allow_private_endpoints))
        services.components.append(deliverer)
        services.extras["deliverer"] = deliverer
    routers = list(ROUTERS)
    spec: dict[str, Any] = openapi.build(all_operations(routers))

    async def openapi_json(_request: Request) -> Response:
        return json_response(spec)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/api/v1/openapi.json", openapi_json),
    ]
    for r in routers:
        routes.extend(r.routes())
    routes.extend(webhook_routes)
    routes.extend(realtime.routes)
    routes.extend(ui_routes())  # the dashboard and /static

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestId),
            Middleware(HttpMetrics),
            Middleware(RateLimit),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.services = services
    return app

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

from server import openapi
from server.api import Router, all_operations, json_response
from server.apikeys.api import router as apikeys_router
from server.audit.api import router as audit_router
from server.auth.api import router as auth_router
from server.consent.api import router as consent_router
from server.contacts.api import router as contacts_router
from server.contacts.bulk_api import router as contacts_bulk_router
from server.contacts.export_api import router as export_router
from server.contacts.import_api import router as contacts_import_router
from server.contacts.merge_api import router as merge_router
from server.conversations.api import router as conversations_router
from server.conversations.webhooks import routes as inbound_routes
from server.endpoints.api import router as endpoints_router
from server.errors import exception_handlers
from server.messages.api import router as messages_router
from server.metrics import HttpMetrics, metrics_endpoint
from server.middleware import BodyLimit, RequestId
from server.providers.api import router as providers_router
from server.ratelimit_middleware import RateLimit
from server.reports.api import router as reports_router
from server.services import build_services
from server.sessions.api import router as sessions_router
from server.settings import Settings, get_settings
from server.sso.api import router as sso_router
from server.sso.flow import routes as sso_routes
from server.state import services_of
from server.suppressions.api import router as suppressions_router
from server.templates.api import router as templates_router
from server.webhooks.api import routes as webhook_routes
from server.workspaces.api import router as workspace_router
from ui.routes import routes as ui_routes

ROUTERS: list[Router] = [
    auth_router,
    export_router,  # before contacts and messages: /contacts/export is not /contacts/{contact_id}
    contacts_bulk_router,  # likewise /contacts/bulk
    contacts_router,
    consent_router,
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
    conversations_router,
    sso_router,
    suppressions_router,
    workspace_router,
]


async def healthz(_request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Dependencies reachable and every supervised loop running; else 503 naming what is not."""
    services = services_of(request.app)
    checks = await services.check_ready()
    ok = all(v == "ok" for v in checks.values())
    if ok:
        return json_response({"status": "ok", "checks": checks})
    body = {
        "type": "about:blank",
        "title": "Service unavailable",
        "status": 503,
        "detail": "Not ready: " + ", ".join(k for k, v in checks.items() if v != "ok") + ".",
        "checks": checks,
    }
    return json_response(body, 503, headers={"content-type": "application/problem+json"})


def create_app(settings: Settings | None = None) -> Starlette:
    """The web app; with `settings.embedded_worker` it also runs the worker's jobs (`serve`)."""
    settings = settings or get_settings()
    services = build_services(settings, web=True, jobs=settings.embedded_worker)
    realtime = services.realtime
    assert realtime is not None
    routers = list(ROUTERS)
    spec: dict[str, Any] = openapi.build(all_operations(routers))

    async def openapi_json(_request: Request) -> Response:
        return json_response(spec)

    # Starlette tries routes in order, a regex each: the providers' webhooks, the busiest path
    # (one request per message status, floods when a campaign lands), come first; behind the API's
    # 50-odd routes their matching was ~5% of a webhook's time.
    routes: list[BaseRoute] = [*webhook_routes, *inbound_routes]  # inbound: email (conversations)
    routes += [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/api/v1/openapi.json", openapi_json),
    ]
    for r in routers:
        routes.extend(r.routes())
    routes.extend(realtime.routes)
    routes.extend(sso_routes)  # the browser's single sign-on
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
            Middleware(
                BodyLimit,
                max_bytes=settings.max_body_bytes,
                routes={("POST", "/api/v1/contacts/import"): settings.import_max_bytes},
            ),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.services = services
    return app

"""Templates (agents write, everyone reads) and provider connections with their health (admin).

Pages read the tables; the forms write through the JSON API (`static/forms.js`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.contacts import service as contacts
from server.errors import Problem
from server.messages.board import provider_health
from server.providers import service as providers
from server.templates import service as templates_service
from ui.pages import page
from ui.web import Viewer, render, services

CHANNELS = ("email", "sms", "whatsapp", "chat")
KINDS = ("sandbox", "smtp", "sendgrid", "mailgun", "twilio", "whatsapp", "slack")
HEALTH_WINDOW = dt.timedelta(hours=1)
PROVIDERS_MAX = 10_000  # a workspace has a handful; the page lists them all
NO_SENDS = {"ok": 0, "failed": 0}


@page()
async def templates_page(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        templates = await templates_service.list_by_name(s, workspace_id=v.workspace_id, limit=500)
    return render(request, "templates.html", {"v": v, "templates": templates, "channels": CHANNELS})


@page()
async def template_page(request: Request, v: Viewer) -> Response:
    template_id = int(request.path_params["template_id"])
    async with services(request).db.transaction() as s:
        try:
            t = await templates_service.get_template(s, workspace_id=v.workspace_id, template_id=template_id)
        except templates_service.TemplateNotFound:
            raise Problem(404, "No such template.") from None
        recent = await contacts.list_contacts(s, workspace_id=v.workspace_id, limit=50)
    return render(request, "template.html", {"v": v, "t": t, "channels": CHANNELS, "contacts": recent})


def _circuits(request: Request) -> Any:
    """The in-process dispatcher's circuit breakers, when it runs inside this web process."""
    dispatcher = services(request).dispatcher
    return None if dispatcher is None else dispatcher.circuits


def circuit_state(circuits: Any, provider_id: int) -> str:
    """closed, open or half_open: read, never created (`Circuits.states()` of the dispatcher)."""
    if circuits is None or not callable(getattr(circuits, "states", None)):
        return "unknown (the dispatcher runs in a worker process)"
    return str(circuits.states().get(provider_id, "closed"))


@page(role="admin")
async def providers_page(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        listed = await providers.list_providers(
            s, workspace_id=v.workspace_id, channel=None, after_id=None, limit=PROVIDERS_MAX
        )
        health = await provider_health(s, workspace_id=v.workspace_id, window=HEALTH_WINDOW)
    circuits = _circuits(request)
    items = [
        {"p": p, "health": health.get(p.id, dict(NO_SENDS)), "circuit": circuit_state(circuits, p.id)}
        for p in sorted(listed, key=lambda p: (p.channel, p.priority, p.id))
    ]
    return render(request, "providers.html", {"v": v, "items": items, "channels": CHANNELS, "kinds": KINDS})


@page(role="admin")
async def provider_page(request: Request, v: Viewer) -> Response:
    provider_id = int(request.path_params["provider_id"])
    async with services(request).db.transaction() as s:
        try:
            p = await providers.get_provider(s, workspace_id=v.workspace_id, provider_id=provider_id)
        except providers.ProviderNotFound:
            raise Problem(404, "No such provider.") from None
        health = (await provider_health(s, workspace_id=v.workspace_id, window=HEALTH_WINDOW)).get(
            p.id, NO_SENDS
        )
    base = services(request).settings.public_url or str(request.base_url).rstrip("/")
    return render(
        request,
        "provider.html",
        {
            "v": v,
            "p": p,
            "health": health,
            "circuit": circuit_state(_circuits(request), p.id),
            "channels": CHANNELS,
            "webhook_url": f"{base.rstrip('/')}/webhooks/{p.id}",
        },
    )


routes = [
    Route("/templates", templates_page, methods=["GET"]),
    Route("/templates/{template_id:int}", template_page, methods=["GET"]),
    Route("/providers", providers_page, methods=["GET"]),
    Route("/providers/{provider_id:int}", provider_page, methods=["GET"]),
]

"""Templates (agents write, everyone reads) and provider connections with their health (admin).

Pages read the tables; the forms write through the JSON API (`static/forms.js`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.contacts.models import Contact
from server.db import utcnow
from server.errors import Problem
from server.messages.models import Message
from server.providers.models import Provider
from server.templates.models import Template
from ui.pages import page
from ui.web import Viewer, render, services

CHANNELS = ("email", "sms", "whatsapp", "chat")
KINDS = ("sandbox", "smtp", "sendgrid", "mailgun", "twilio", "whatsapp", "slack")
HEALTH_WINDOW = dt.timedelta(hours=1)
FAILED = ("failed", "bounced")
SENT = ("sent", "delivered")


async def _contacts_for_test(session: Any, workspace_id: int) -> list[Contact]:
    rows = await session.execute(
        select(Contact).where(Contact.workspace_id == workspace_id).order_by(Contact.id.desc()).limit(50)
    )
    return list(rows.scalars())


@page()
async def templates_page(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        rows = await s.execute(
            select(Template).where(Template.workspace_id == v.workspace_id).order_by(Template.name).limit(500)
        )
        templates = list(rows.scalars())
    return render(request, "templates.html", {"v": v, "templates": templates, "channels": CHANNELS})


@page()
async def template_page(request: Request, v: Viewer) -> Response:
    template_id = int(request.path_params["template_id"])
    async with services(request).db.transaction() as s:
        t = await s.get(Template, template_id)
        if t is None or t.workspace_id != v.workspace_id:
            raise Problem(404, "No such template.")
        contacts = await _contacts_for_test(s, v.workspace_id)
    return render(request, "template.html", {"v": v, "t": t, "channels": CHANNELS, "contacts": contacts})


def _circuits(request: Request) -> Any:
    """The in-process dispatcher's circuit breakers, when it runs inside this web process."""
    dispatcher = services(request).dispatcher
    return None if dispatcher is None else dispatcher.circuits


def circuit_state(circuits: Any, provider_id: int) -> str:
    """closed, open or half_open: read, never created (`Circuits.states()` of the dispatcher)."""
    if circuits is None or not callable(getattr(circuits, "states", None)):
        return "unknown (the dispatcher runs in a worker process)"
    return str(circuits.states().get(provider_id, "closed"))


async def provider_health(session: Any, workspace_id: int) -> dict[int, dict[str, int]]:
    """Sends of the last hour by provider: succeeded and failed."""
    since = utcnow() - HEALTH_WINDOW
    rows = await session.execute(
        select(Message.provider_id, Message.status, func.count())
        .where(
            Message.workspace_id == workspace_id,
            Message.updated_at >= since,
            Message.provider_id.is_not(None),
        )
        .group_by(Message.provider_id, Message.status)
    )
    out: dict[int, dict[str, int]] = {}
    for provider_id, status, n in rows:
        h = out.setdefault(provider_id, {"ok": 0, "failed": 0})
        if status in SENT:
            h["ok"] += n
        elif status in FAILED:
            h["failed"] += n
    return out


@page(role="admin")
async def providers_page(request: Request, v: Viewer) -> Response:
    async with services(request).db.transaction() as s:
        rows = await s.execute(
            select(Provider)
            .where(Provider.workspace_id == v.workspace_id)
            .order_by(Provider.channel, Provider.priority, Provider.id)
        )
        providers = list(rows.scalars())
        health = await provider_health(s, v.workspace_id)
    circuits = _circuits(request)
    items = [
        {"p": p, "health": health.get(p.id, {"ok": 0, "failed": 0}), "circuit": circuit_state(circuits, p.id)}
        for p in providers
    ]
    return render(request, "providers.html", {"v": v, "items": items, "channels": CHANNELS, "kinds": KINDS})


@page(role="admin")
async def provider_page(request: Request, v: Viewer) -> Response:
    provider_id = int(request.path_params["provider_id"])
    async with services(request).db.transaction() as s:
        p = await s.get(Provider, provider_id)
        if p is None or p.workspace_id != v.workspace_id:
            raise Problem(404, "No such provider.")
        health = (await provider_health(s, v.workspace_id)).get(p.id, {"ok": 0, "failed": 0})
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

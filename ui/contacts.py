"""Contacts: the searchable list with CSV import, and the contact page (co-editing, history,
messages, consent per channel)."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from server.api import Ctx, parse_model
from server.consent import service as consent_service
from server.contacts import bulk_api, service
from server.contacts.bulk import COUNT_CAP, count_matching
from server.contacts.models import Contact
from server.contacts.schemas import ContactQuery
from server.errors import Problem
from server.messages import service as messages_service
from server.messages.models import Message
from server.pagination import decode_cursor, encode_cursor
from server.templates import service as templates_service
from ui.inbox import contact_conversations
from ui.pages import page
from ui.web import Viewer, render, services, user_names

log = logging.getLogger("switchboard.ui")

PAGE_SIZE = 25
CHANNELS = ("email", "sms", "whatsapp", "chat")


def search_of(request: Request) -> tuple[str | None, str | None]:
    """The contact search in the query string (`?q=&tag=`), bounded as the API bounds it; the
    contacts list's, and the audience the campaigns page is handed."""
    params = request.query_params
    return (params.get("q") or "").strip()[:200] or None, (params.get("tag") or "").strip()[:64] or None


async def matching(s: AsyncSession, v: Viewer, q: str | None, tag: str | None) -> str | None:
    """How many contacts a search selects, as "Apply to all N matching" shows it ("10,000+" past the
    cap, so a page stays cheap); None without a search, or for a viewer, who cannot act on it."""
    if not (v.can_write and (q or tag)):
        return None
    count = await count_matching(s, workspace_id=v.workspace_id, q=q, tag=tag)
    return f"{COUNT_CAP:,}+" if count > COUNT_CAP else f"{count:,}"


def _query(request: Request) -> ContactQuery:
    q, tag = search_of(request)
    try:
        return ContactQuery(q=q, tag=tag, limit=PAGE_SIZE, cursor=request.query_params.get("cursor") or None)
    except ValueError:
        return ContactQuery(limit=PAGE_SIZE)


async def _list(request: Request, v: Viewer) -> dict[str, Any]:
    query = _query(request)
    try:
        before = decode_cursor(query.cursor)
    except Problem:
        before = None
    async with services(request).db.transaction() as s:
        rows = await service.list_contacts(
            s, workspace_id=v.workspace_id, q=query.q, tag=query.tag, before_id=before, limit=PAGE_SIZE + 1
        )
        # "Apply to all N matching" (bulk actions) when a search is active and the viewer may write.
        how_many = await matching(s, v, query.q, query.tag)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return {
        "v": v,
        "matching": how_many,
        "query": query,
        "contacts": rows,
        "next_cursor": encode_cursor(rows[-1].id) if more else None,
        "first_page": before is None,
    }


async def _tags(request: Request, v: Viewer) -> list[str]:
    """Tags in use among the newest contacts, for the filter's suggestions."""
    async with services(request).db.transaction() as s:
        return await service.tags_in_use(s, workspace_id=v.workspace_id, sample=500, limit=200)


@page()
async def contacts_page(request: Request, v: Viewer) -> Response:
    data = await _list(request, v)
    head = v.workspace.event_seq
    started = None
    if (raw := request.query_params.get("bulk", "")).isdigit() and len(raw) < 18:
        started = await services(request).bulk.status(v.workspace_id, int(raw))
    return render(
        request,
        "contacts.html",
        {"head": head, "tags": await _tags(request, v), "bulk_started": started, **data},
    )


@page(role="agent")
async def bulk_post(request: Request, v: Viewer) -> Response:
    """ "Apply to all N matching": starts the same bulk action as `POST /api/v1/contacts/bulk`
    (roles, validation, audit); a delete needs its confirmation box ticked."""
    form = await request.form()
    q, tag = str(form.get("q", "")).strip(), str(form.get("tag", "")).strip()
    action = str(form.get("action", ""))
    if action == "delete" and form.get("confirm") != "yes":
        raise Problem(422, "Tick the box to confirm deleting every matching contact.")
    data: dict[str, Any] = {"filter": {"q": q or None, "tag": tag or None}, "action": action}
    if action != "delete":
        data["tag"] = str(form.get("bulk_tag", ""))
    if not (q or tag):
        raise Problem(422, "Search or pick a tag first: the dashboard applies bulk actions to a search.")
    job = await bulk_api.start(
        Ctx(request=request, principal=v.principal, body=None), parse_model(bulk_api.BulkIn, data)
    )
    return RedirectResponse(f"/contacts?{urlencode({'q': q, 'tag': tag, 'bulk': job.id})}", status_code=303)


@page()
async def contacts_fragment(request: Request, v: Viewer) -> Response:
    return render(request, "_contact_list.html", await _list(request, v))


def _present(request: Request) -> Any:
    """The realtime component's presence, when the realtime layer is running in this app."""
    realtime = services(request).realtime
    return None if realtime is None else realtime.presence


async def _presence_now(
    request: Request, v: Viewer, contact_id: int, names: dict[int, str]
) -> list[dict[str, Any]]:
    presence = _present(request)
    if presence is None:
        return []
    try:
        states: dict[int, str] = await presence.store.list(v.workspace_id, contact_id)
    except Exception:
        log.exception("reading presence failed")
        return []
    return [
        {"user_id": uid, "user_name": names.get(uid, f"user {uid}"), "state": state}
        for uid, state in sorted(states.items())
        if uid != v.user.id
    ]


def attribute_value(value: Any) -> tuple[str, bool]:
    """The text shown in an attribute's input, and whether it is JSON (not a plain string)."""
    if isinstance(value, str):
        return value, False
    return json.dumps(value), True


async def _contact(request: Request, v: Viewer) -> Contact:
    contact_id = int(request.path_params["contact_id"])
    async with services(request).db.transaction() as s:
        return await service.get_contact(s, workspace_id=v.workspace_id, contact_id=contact_id)


async def _history(request: Request, v: Viewer, contact_id: int) -> list[dict[str, Any]]:
    async with services(request).db.transaction() as s:
        rows = await service.history(
            s, workspace_id=v.workspace_id, contact_id=contact_id, before_id=None, limit=50
        )
        names = await user_names(s, v.workspace_id)
    return [
        {
            "field": r.field,
            "old": r.old,
            "new": r.new,
            "at": r.at,
            "who": names.get(r.user_id, "import or system") if r.user_id else "import or system",
        }
        for r in rows
    ]


async def _messages(session: AsyncSession, v: Viewer, contact_id: int) -> list[Message]:
    return await messages_service.list_messages(
        session, workspace_id=v.workspace_id, contact_id=contact_id, limit=20
    )


async def _consent(session: AsyncSession, v: Viewer, contact_id: int) -> list[dict[str, Any]]:
    """Per channel: opted out (at any scope), opted in, or no decision yet (marketing is sent)."""
    rows = await consent_service.current(session, workspace_id=v.workspace_id, contact_id=contact_id)
    out = []
    for channel in CHANNELS:
        mine = [r for r in rows if r.channel == channel]
        out_rows = [r for r in mine if r.state == "opted_out"]
        shown = max(out_rows or mine, key=lambda r: r.at) if mine else None
        out.append(
            {
                "channel": channel,
                "state": shown.state if shown else "",
                "source": shown.source if shown else "",
                "at": shown.at if shown else None,
            }
        )
    return out


@page()
async def contact_page(request: Request, v: Viewer) -> Response:
    head = v.workspace.event_seq
    contact = await _contact(request, v)
    async with services(request).db.transaction() as s:
        names = await user_names(s, v.workspace_id)
        messages = await _messages(s, v, contact.id)
        templates = await templates_service.list_by_name(s, workspace_id=v.workspace_id, limit=200)
        consent = await _consent(s, v, contact.id)
        conversations = await contact_conversations(s, v, contact.id)
    attributes = [(k, *attribute_value(val)) for k, val in sorted(contact.attributes.items())]
    return render(
        request,
        "contact.html",
        {
            "v": v,
            "head": head,
            "c": contact,
            "attributes": attributes,
            "history": await _history(request, v, contact.id),
            "present": await _presence_now(request, v, contact.id, names),
            "messages": messages,
            "conversations": conversations,
            "templates": templates,
            "channels": CHANNELS,
            "consent": consent,
        },
    )


@page()
async def history_fragment(request: Request, v: Viewer) -> Response:
    contact = await _contact(request, v)
    return render(request, "_history.html", {"history": await _history(request, v, contact.id)})


@page()
async def messages_fragment(request: Request, v: Viewer) -> Response:
    contact = await _contact(request, v)
    async with services(request).db.transaction() as s:
        messages = await _messages(s, v, contact.id)
    return render(request, "_contact_messages.html", {"messages": messages})


@page()
async def consent_fragment(request: Request, v: Viewer) -> Response:
    contact = await _contact(request, v)
    async with services(request).db.transaction() as s:
        consent = await _consent(s, v, contact.id)
    return render(request, "_consent.html", {"consent": consent})


@page()
async def conversations_fragment(request: Request, v: Viewer) -> Response:
    contact = await _contact(request, v)
    async with services(request).db.transaction() as s:
        conversations = await contact_conversations(s, v, contact.id)
    return render(request, "inbox/_contact_conversations.html", {"conversations": conversations})


PRESENCE_STATES = ("viewing", "editing", "left")


@page()
async def presence_post(request: Request, v: Viewer) -> Response:
    """Presence from a page that is long-polling (no socket to announce it on): the page posts its
    state, and again every 20 s so that it does not expire; `left` when it goes away."""
    contact = await _contact(request, v)
    form = await request.form()
    state = str(form.get("state", ""))
    if state not in PRESENCE_STATES:
        raise Problem(422, 'state must be "viewing", "editing" or "left".')
    presence = _present(request)
    if presence is not None:
        await presence.announce((v.workspace_id, contact.id, v.user.id), state)
    return Response(status_code=204)


routes = [
    Route("/contacts", contacts_page, methods=["GET"]),
    Route("/contacts/list", contacts_fragment, methods=["GET"]),
    Route("/contacts/bulk", bulk_post, methods=["POST"]),
    Route("/contacts/{contact_id:int}", contact_page, methods=["GET"]),
    Route("/contacts/{contact_id:int}/history", history_fragment, methods=["GET"]),
    Route("/contacts/{contact_id:int}/messages", messages_fragment, methods=["GET"]),
    Route("/contacts/{contact_id:int}/consent", consent_fragment, methods=["GET"]),
    Route("/contacts/{contact_id:int}/conversations", conversations_fragment, methods=["GET"]),
    Route("/contacts/{contact_id:int}/presence", presence_post, methods=["POST"]),
]

"""The shared inbox (issue 16): conversations by view and status, one conversation's timeline, and
the agent's actions (reply, assign, snooze, resolve, read) as forms answered with htmx fragments.

Everything writes through `server.conversations.service`, whose events (`conversation.*` on topic
`inbox`) move every agent's page. Collision detection has two halves: the page shows who else is
replying (presence `replying` per conversation) and asks before a send, and the reply route itself
refuses, with the same question, an unconfirmed reply once another agent has answered the
customer's last message (the page may not have heard of that answer yet)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from realtime.presence import conversation_key
from server.contacts.models import Contact
from server.conversations import service
from server.conversations.models import Conversation, InboundMessage
from server.conversations.webhooks import poke
from server.errors import Problem
from server.messages import service as messages_service
from server.messages.models import Message, MessageStatus
from server.messages.wake import wake_local
from server.templates import render as templates_render
from server.templates import service as templates_service
from ui.pages import page
from ui.web import Viewer, render, services, user_names

log = logging.getLogger("switchboard.ui")

VIEWS = ("all", "mine", "unassigned")
STATUSES = ("open", "pending", "snoozed", "resolved")
LIST_SIZE = 50
SNOOZES = {
    "1h": dt.timedelta(hours=1),
    "4h": dt.timedelta(hours=4),
    "1d": dt.timedelta(days=1),
    "7d": dt.timedelta(days=7),
}
PRESENCE_STATES = ("replying", "left")
# The collision question, asked by the page (someone is replying) and by the route (someone replied).
COLLISION_REPLIED = "{who} already answered the customer's last message. Send yours too?"


@dataclass(frozen=True)
class InboxFilter:
    view: str = "all"
    status: str = "open"  # "" for any status

    @classmethod
    def from_request(cls, request: Request) -> InboxFilter:
        q = request.query_params
        view = q.get("view", "all")
        status = q.get("status", "open")
        return cls(view=view if view in VIEWS else "all", status=status if status in STATUSES else "")

    @property
    def assignee(self) -> str | None:
        return {"mine": "me", "unassigned": "none"}.get(self.view)

    @property
    def query(self) -> str:
        return f"view={self.view}&status={self.status}"


# --- reads ---------------------------------------------------------------------------------------


async def _contacts(session: AsyncSession, workspace_id: int, ids: set[int]) -> dict[int, Contact]:
    if not ids:
        return {}
    rows = await session.execute(
        select(Contact).where(Contact.workspace_id == workspace_id, Contact.id.in_(ids))
    )
    return {c.id: c for c in rows.scalars()}


async def _previews(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    """The customer's last words in each conversation."""
    if not ids:
        return {}
    newest = (
        select(func.max(InboundMessage.id).label("id"))
        .where(InboundMessage.conversation_id.in_(ids))
        .group_by(InboundMessage.conversation_id)
        .subquery()
    )
    rows = await session.execute(
        select(InboundMessage.conversation_id, InboundMessage.text).join(
            newest, InboundMessage.id == newest.c.id
        )
    )
    return {cid: service.preview(text, 90) for cid, text in rows.all()}


def contact_label(c: Contact | None, fallback: str = "") -> str:
    if c is None:
        return fallback or "(unknown contact)"
    return c.name or c.email or c.phone or f"contact {c.id}"


async def conversation_rows(
    session: AsyncSession, v: Viewer, f: InboxFilter, *, contact_id: int | None = None
) -> list[dict[str, Any]]:
    pairs = await service.list_conversations(
        session,
        workspace_id=v.workspace_id,
        user_id=v.user.id,
        status=f.status or None,
        assignee=f.assignee,
        contact_id=contact_id,
        limit=LIST_SIZE,
    )
    contacts = await _contacts(session, v.workspace_id, {c.contact_id for c, _ in pairs})
    previews = await _previews(session, [c.id for c, _ in pairs])
    names = await user_names(session, v.workspace_id)
    return [
        {
            "c": c,
            "unread": unread,
            "contact": contact_label(contacts.get(c.contact_id)),
            "preview": previews.get(c.id, ""),
            "assignee": names.get(c.assignee_id, "") if c.assignee_id else "",
        }
        for c, unread in pairs
    ]


async def contact_conversations(session: AsyncSession, v: Viewer, contact_id: int) -> list[dict[str, Any]]:
    """The contact page's section: every conversation of the contact, whatever its status."""
    return await conversation_rows(session, v, InboxFilter(view="all", status=""), contact_id=contact_id)


def answered_by(
    items: list[dict[str, Any]], authors: dict[int, int | None], me: int, names: dict[int, str]
) -> str:
    """Who else has answered since the customer's last message ("" when nobody did)."""
    who: list[str] = []
    for item in reversed(items):
        if item["direction"] == "inbound":
            break
        author = authors.get(item["id"])
        if author is not None and author != me and item.get("status") not in ("canceled", "failed"):
            name = names.get(author, f"user {author}")
            if name not in who:
                who.append(name)
    return ", ".join(reversed(who))


async def _timeline(session: AsyncSession, v: Viewer, conv: Conversation) -> dict[str, Any]:
    items = await service.timeline(session, conv)
    out_ids = [i["id"] for i in items if i["direction"] == "outbound"]
    authors: dict[int, int | None] = {}
    if out_ids:
        rows = await session.execute(select(Message.id, Message.created_by).where(Message.id.in_(out_ids)))
        authors = {mid: by for mid, by in rows.all()}
    names = await user_names(session, v.workspace_id)
    for item in items:
        if item["direction"] == "outbound":
            by = authors.get(item["id"])
            item["by"] = names.get(by, "") if by else ""
    last_inbound = next((i["id"] for i in reversed(items) if i["direction"] == "inbound"), 0)
    return {
        "items": items,
        "answered_by": answered_by(items, authors, v.user.id, names),
        "last_inbound": last_inbound,
        "names": names,
    }


async def _replying(
    request: Request, v: Viewer, conversation_id: int, names: dict[int, str]
) -> list[dict[str, Any]]:
    """Other agents replying in this conversation right now (presence)."""
    realtime = services(request).realtime
    if realtime is None:
        return []
    try:
        states: dict[int, str] = await realtime.presence.store.list(v.workspace_id, -conversation_id)
    except Exception:
        log.exception("reading presence failed")
        return []
    return [
        {"id": u, "name": names.get(u, f"user {u}")}
        for u, state in sorted(states.items())
        if u != v.user.id and state == "replying"
    ]


def _conversation_id(request: Request) -> int:
    return int(request.path_params["conversation_id"])


async def _get(session: AsyncSession, v: Viewer, conversation_id: int) -> Conversation:
    try:
        return await service.get_conversation(
            session, workspace_id=v.workspace_id, conversation_id=conversation_id
        )
    except service.ConversationNotFound:
        raise Problem(404, "No such conversation.") from None


async def conversation_context(request: Request, v: Viewer, conversation_id: int) -> dict[str, Any]:
    """Everything `inbox/_conversation.html` shows."""
    async with services(request).db.transaction() as s:
        conv = await _get(s, v, conversation_id)
        contact = (await _contacts(s, v.workspace_id, {conv.contact_id})).get(conv.contact_id)
        timeline = await _timeline(s, v, conv)
        templates = [
            t
            for t in await templates_service.list_by_name(s, workspace_id=v.workspace_id, limit=200)
            if t.channel == conv.channel
        ]
    names = timeline["names"]
    return {
        "v": v,
        "conv": conv,
        "contact": contact,
        "contact_name": contact_label(contact),
        "assignee_name": names.get(conv.assignee_id, "") if conv.assignee_id else "",
        "agents": sorted(names.items(), key=lambda kv: kv[1].lower()),
        "timeline": timeline,
        "templates": templates,
        "replying": await _replying(request, v, conv.id, names),
        "snoozes": SNOOZES,
        "draft": "",
        "error": "",
        "collision": "",
    }


# --- pages and fragments -------------------------------------------------------------------------


async def _inbox(request: Request, v: Viewer, conversation_id: int | None) -> Response:
    f = InboxFilter.from_request(request)
    # The event head is read before the data, so events that race the page are replayed, never lost.
    head = v.workspace.event_seq
    conv_ctx = await conversation_context(request, v, conversation_id) if conversation_id else None
    async with services(request).db.transaction() as s:
        rows = await conversation_rows(s, v, f)
    return render(
        request,
        "inbox/page.html",
        {
            "v": v,
            "f": f,
            "head": head,
            "rows": rows,
            "views": VIEWS,
            "statuses": STATUSES,
            "current": conversation_id or 0,
            "cx": conv_ctx,
        },
    )


@page()
async def inbox_page(request: Request, v: Viewer) -> Response:
    return await _inbox(request, v, None)


@page()
async def conversation_page(request: Request, v: Viewer) -> Response:
    return await _inbox(request, v, _conversation_id(request))


@page()
async def list_fragment(request: Request, v: Viewer) -> Response:
    f = InboxFilter.from_request(request)
    current = request.query_params.get("c", "")
    async with services(request).db.transaction() as s:
        rows = await conversation_rows(s, v, f)
    return render(
        request,
        "inbox/_list.html",
        {"rows": rows, "f": f, "current": int(current) if current.isdigit() else 0},
    )


@page()
async def head_fragment(request: Request, v: Viewer) -> Response:
    cx = await conversation_context(request, v, _conversation_id(request))
    return render(request, "inbox/_head.html", {"cx": cx, "f": InboxFilter.from_request(request)})


@page()
async def timeline_fragment(request: Request, v: Viewer) -> Response:
    cx = await conversation_context(request, v, _conversation_id(request))
    return render(request, "inbox/_timeline.html", {"cx": cx})


# --- actions -------------------------------------------------------------------------------------


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _done(request: Request, conversation_id: int) -> bool:
    """A plain form (no script) is sent back to the conversation page."""
    return not request.headers.get("hx-request")


def _back(request: Request, conversation_id: int) -> Response:
    return RedirectResponse(f"/inbox/{conversation_id}", status_code=303)


async def _head_or_back(request: Request, v: Viewer, conversation_id: int) -> Response:
    poke(services(request), v.workspace_id)
    if _done(request, conversation_id):
        return _back(request, conversation_id)
    cx = await conversation_context(request, v, conversation_id)
    return render(request, "inbox/_head.html", {"cx": cx, "f": InboxFilter.from_request(request)})


async def _update(request: Request, v: Viewer, changes: dict[str, Any]) -> Response:
    conversation_id = _conversation_id(request)
    try:
        async with services(request).db.transaction() as s:
            await service.update_conversation(
                s, workspace_id=v.workspace_id, conversation_id=conversation_id, changes=changes
            )
    except service.ConversationNotFound:
        raise Problem(404, "No such conversation.") from None
    except service.AssigneeUnknown:
        raise Problem(422, "That agent is not an active user of this workspace.") from None
    return await _head_or_back(request, v, conversation_id)


@page(role="agent")
async def assign(request: Request, v: Viewer) -> Response:
    raw = _field(await request.form(), "assignee")
    if raw == "me":
        assignee: int | None = v.user.id
    elif raw in ("", "none"):
        assignee = None
    elif raw.isdigit() and len(raw) <= 18:
        assignee = int(raw)
    else:
        raise Problem(422, 'assignee is "me", "none" or an agent\'s id.')
    return await _update(request, v, {"assignee_id": assignee})


@page(role="agent")
async def set_status(request: Request, v: Viewer) -> Response:
    form = await request.form()
    status, snooze = _field(form, "status"), _field(form, "snooze")
    if snooze:
        if snooze not in SNOOZES:
            raise Problem(422, f"snooze is one of {', '.join(SNOOZES)}.")
        until = dt.datetime.now(dt.UTC) + SNOOZES[snooze]
        return await _update(request, v, {"status": "snoozed", "snooze_until": until})
    if status not in ("open", "pending", "resolved"):
        raise Problem(422, 'status is "open", "pending" or "resolved" (snooze with a snooze time).')
    return await _update(request, v, {"status": status})


@page()
async def mark_read(request: Request, v: Viewer) -> Response:
    conversation_id = _conversation_id(request)
    try:
        async with services(request).db.transaction() as s:
            await service.mark_read(
                s, workspace_id=v.workspace_id, conversation_id=conversation_id, user_id=v.user.id
            )
    except service.ConversationNotFound:
        raise Problem(404, "No such conversation.") from None
    poke(services(request), v.workspace_id)
    return (
        Response(status_code=204) if not _done(request, conversation_id) else _back(request, conversation_id)
    )


async def _reply_form(
    request: Request, v: Viewer, conversation_id: int, status: int, **state: str
) -> Response:
    cx = await conversation_context(request, v, conversation_id)
    cx.update(state)
    return render(request, "inbox/_reply.html", {"cx": cx}, status=status)


@page(role="agent")
async def reply(request: Request, v: Viewer) -> Response:
    """Send the agent's answer. Unconfirmed, it is refused (409, the same form asking to confirm)
    when another agent has answered since the customer's last message."""
    conversation_id = _conversation_id(request)
    form = await request.form()
    text, template = _field(form, "text"), _field(form, "template_id")
    confirmed = _field(form, "confirmed") == "1"
    if not text and not template:
        return await _reply_form(request, v, conversation_id, 422, error="Write a reply or pick a template.")
    if template and not (template.isdigit() and len(template) <= 18):
        return await _reply_form(request, v, conversation_id, 422, draft=text, error="No such template.")
    svc = services(request)
    if not confirmed:
        async with svc.db.transaction() as s:
            who = (await _timeline(s, v, await _get(s, v, conversation_id)))["answered_by"]
        if who:
            collision = COLLISION_REPLIED.format(who=who)
            return await _reply_form(request, v, conversation_id, 409, draft=text, collision=collision)
    try:
        async with svc.db.transaction() as s:
            m = await service.reply(
                s,
                workspace_id=v.workspace_id,
                conversation_id=conversation_id,
                user_id=v.user.id,
                text=None if template else text,
                template_id=int(template) if template else None,
                variables={},
                idempotency_key=None,
            )
    except service.WindowClosed:
        return await _reply_form(
            request,
            v,
            conversation_id,
            422,
            draft=text,
            error="WhatsApp delivers free-form messages only within 24 hours of the customer's last "
            "message: pick a template.",
        )
    except messages_service.InvalidReference as exc:
        detail = "; ".join(str(e.get("message", "")) for e in exc.errors) or "invalid"
        return await _reply_form(request, v, conversation_id, 422, draft=text, error=f"Not sent: {detail}.")
    except templates_render.TemplateInvalid:
        return await _reply_form(
            request, v, conversation_id, 422, draft=text, error="The template is not valid."
        )
    if m.status == MessageStatus.queued:
        wake_local(svc)
    poke(svc, v.workspace_id)
    if _done(request, conversation_id):
        return _back(request, conversation_id)
    response = await _reply_form(request, v, conversation_id, 200)
    response.headers["HX-Trigger"] = "timeline-changed"
    return response


@page()
async def presence_post(request: Request, v: Viewer) -> Response:
    """Presence from a page that is long-polling: `replying` while the agent types, `left` after."""
    conversation_id = _conversation_id(request)
    state = _field(await request.form(), "state")
    if state not in PRESENCE_STATES:
        raise Problem(422, 'state must be "replying" or "left".')
    async with services(request).db.transaction() as s:
        if not await service.exists(s, workspace_id=v.workspace_id, conversation_id=conversation_id):
            raise Problem(404, "No such conversation.")
    realtime = services(request).realtime
    if realtime is not None:
        await realtime.presence.announce(conversation_key(v.workspace_id, conversation_id, v.user.id), state)
    return Response(status_code=204)


routes = [
    Route("/inbox", inbox_page, methods=["GET"]),
    Route("/inbox/list", list_fragment, methods=["GET"]),
    Route("/inbox/{conversation_id:int}", conversation_page, methods=["GET"]),
    Route("/inbox/{conversation_id:int}/head", head_fragment, methods=["GET"]),
    Route("/inbox/{conversation_id:int}/timeline", timeline_fragment, methods=["GET"]),
    Route("/inbox/{conversation_id:int}/assign", assign, methods=["POST"]),
    Route("/inbox/{conversation_id:int}/status", set_status, methods=["POST"]),
    Route("/inbox/{conversation_id:int}/read", mark_read, methods=["POST"]),
    Route("/inbox/{conversation_id:int}/reply", reply, methods=["POST"]),
    Route("/inbox/{conversation_id:int}/presence", presence_post, methods=["POST"]),
]

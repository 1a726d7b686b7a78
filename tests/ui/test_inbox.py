"""The inbox pages and their actions through the dashboard's own routes (forms, htmx, CSRF)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from server.conversations.models import Conversation
from server.messages.models import Message
from tests.conversations.support import World
from tests.ui.conftest import BrowserFactory, csrf_field

HX = {"HX-Request": "true"}


async def _world(app: Any) -> World:
    return await World(app).build()


async def _inbound(world: World, text: str, sender: str = "+15558675310") -> int:
    r = await world.post_twilio(world.twilio_form(text, sender=sender))
    assert r.status_code == 200, r.text
    async with world.db.transaction() as s:
        return int((await s.execute(select(Conversation.id))).scalars().all()[-1])


async def _me(c: httpx.AsyncClient) -> int:
    return int((await c.get("/api/v1/me")).json()["id"])


async def test_inbox_lists_a_customer_reply_with_its_unread_badge(
    app: Any, browser_client: BrowserFactory
) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        await _inbound(world, "Is my order on its way?")
    finally:
        await world.close()
    r = await ann.get("/inbox")
    assert r.status_code == 200
    assert 'aria-current="page">Inbox<' in r.text  # in the navigation
    assert "+15558675310" in r.text and "Is my order on its way?" in r.text
    assert 'aria-label="1 unread"' in r.text
    fragment = await ann.get("/inbox/list?view=all&status=open", headers=HX)
    assert fragment.status_code == 200 and 'aria-label="1 unread"' in fragment.text


async def test_filters_by_view_and_status(app: Any, browser_client: BrowserFactory) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "hello")
    finally:
        await world.close()
    mine = await ann.get("/inbox/list?view=mine&status=open")
    unassigned = await ann.get("/inbox/list?view=unassigned&status=open")
    resolved = await ann.get("/inbox/list?view=all&status=resolved")
    assert "No conversations here." in mine.text
    assert f'data-conversation-id="{conv}"' in unassigned.text
    assert "No conversations here." in resolved.text
    r = await ann.post(f"/inbox/{conv}/assign", data={"assignee": "me"}, headers=HX)
    assert r.status_code == 200 and "assigned to Ann" in r.text
    mine = await ann.get("/inbox/list?view=mine&status=")
    assert f'data-conversation-id="{conv}"' in mine.text
    assert "No conversations here." in (await ann.get("/inbox/list?view=unassigned&status=")).text


async def test_reading_clears_only_my_badge(app: Any, browser_client: BrowserFactory) -> None:
    ann = await browser_client("agent", name="Ann")
    bob = await browser_client("agent", name="Bob")
    world = await _world(app)
    try:
        conv = await _inbound(world, "anyone there?")
    finally:
        await world.close()
    page = await ann.get(f"/inbox/{conv}")
    assert page.status_code == 200 and "anyone there?" in page.text
    assert (await ann.post(f"/inbox/{conv}/read", headers=HX)).status_code == 204
    assert 'aria-label="1 unread"' not in (await ann.get("/inbox/list")).text
    assert 'aria-label="1 unread"' in (await bob.get("/inbox/list")).text


async def test_snooze_resolve_and_reopen_through_the_forms(app: Any, browser_client: BrowserFactory) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "thanks")
    finally:
        await world.close()
    r = await ann.post(f"/inbox/{conv}/status", data={"snooze": "1h"}, headers=HX)
    assert r.status_code == 200 and 'data-status="snoozed"' in r.text and "until" in r.text
    r = await ann.post(f"/inbox/{conv}/status", data={"status": "resolved"}, headers=HX)
    assert 'data-status="resolved"' in r.text and 'id="reopen-btn"' in r.text
    # Without htmx (a plain form): back to the conversation page.
    r = await ann.post(f"/inbox/{conv}/status", data={"status": "open"})
    assert r.status_code == 303 and r.headers["location"] == f"/inbox/{conv}"
    assert 'data-status="open"' in (await ann.get(f"/inbox/{conv}/head")).text
    bad = await ann.post(f"/inbox/{conv}/status", data={"status": "snoozed"}, headers=HX)
    assert bad.status_code == 422


async def test_reply_goes_to_the_number_the_customer_wrote_from(
    app: Any, browser_client: BrowserFactory
) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "when do you open?", sender="+15551112222")
    finally:
        await world.close()
    r = await ann.post(f"/inbox/{conv}/reply", data={"text": "At nine."}, headers=HX)
    assert r.status_code == 200, r.text
    assert r.headers["HX-Trigger"] == "timeline-changed"
    assert 'id="reply-text"' in r.text and "At nine." not in r.text  # a fresh, empty form
    async with app.state.services.db.transaction() as s:
        m = (await s.execute(select(Message))).scalar_one()
    assert (m.to_address, m.body, m.conversation_id, m.created_by) == (
        "+15551112222",
        "At nine.",
        conv,
        await _me(ann),
    )
    timeline = await ann.get(f"/inbox/{conv}/timeline")
    assert "At nine." in timeline.text and "Ann" in timeline.text
    empty = await ann.post(f"/inbox/{conv}/reply", data={"text": "  "}, headers=HX)
    assert empty.status_code == 422 and "Write a reply" in empty.text


async def test_a_second_answer_to_the_same_customer_message_asks_first(
    app: Any, browser_client: BrowserFactory
) -> None:
    ann = await browser_client("agent", name="Ann")
    bob = await browser_client("agent", name="Bob")
    world = await _world(app)
    try:
        conv = await _inbound(world, "can I change my order?")
        assert (await bob.post(f"/inbox/{conv}/reply", data={"text": "Yes!"}, headers=HX)).status_code == 200
        # Bob answering twice is not a collision: it is his own thread of answers.
        assert (
            await bob.post(f"/inbox/{conv}/reply", data={"text": "Which item?"}, headers=HX)
        ).status_code == 200
        asked = await ann.post(f"/inbox/{conv}/reply", data={"text": "Sure, tell me"}, headers=HX)
        assert asked.status_code == 409
        assert "Bob already answered" in asked.text and "Send anyway" in asked.text
        assert "Sure, tell me" in asked.text  # the draft is kept
        sent = await ann.post(
            f"/inbox/{conv}/reply", data={"text": "Sure, tell me", "confirmed": "1"}, headers=HX
        )
        assert sent.status_code == 200
        # The customer writes again: a new message to answer, no question asked.
        await world.post_twilio(world.twilio_form("the blue one"))
        again = await ann.post(f"/inbox/{conv}/reply", data={"text": "Done."}, headers=HX)
        assert again.status_code == 200
    finally:
        await world.close()
    async with app.state.services.db.transaction() as s:
        bodies = (await s.execute(select(Message.body).order_by(Message.id))).scalars().all()
    assert bodies == ["Yes!", "Which item?", "Sure, tell me", "Done."]


async def test_actions_need_the_csrf_token(app: Any, browser_client: BrowserFactory) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "hi")
    finally:
        await world.close()
    page = await ann.get(f"/inbox/{conv}")
    token = csrf_field(page.text)
    del ann.headers["X-CSRF-Token"]
    for path, data in (
        ("reply", {"text": "x"}),
        ("assign", {"assignee": "me"}),
        ("status", {"status": "resolved"}),
        ("read", {}),
        ("presence", {"state": "replying"}),
    ):
        r = await ann.post(f"/inbox/{conv}/{path}", data=data)
        assert r.status_code == 403, (path, r.status_code)
        r = await ann.post(f"/inbox/{conv}/{path}", data={**data, "csrf_token": "wrong"})
        assert r.status_code == 403, (path, r.status_code)
    async with app.state.services.db.transaction() as s:
        c = await s.get(Conversation, conv)
        assert c is not None and (c.status, c.assignee_id) == ("open", None)
        assert (await s.execute(select(Message))).first() is None
    r = await ann.post(f"/inbox/{conv}/assign", data={"assignee": "me", "csrf_token": token})
    assert r.status_code == 303


async def test_viewers_read_but_do_not_act(app: Any, browser_client: BrowserFactory) -> None:
    viewer = await browser_client("viewer", name="Vic")
    world = await _world(app)
    try:
        conv = await _inbound(world, "hello")
    finally:
        await world.close()
    page = await viewer.get(f"/inbox/{conv}")
    assert (
        page.status_code == 200 and 'id="reply-form"' not in page.text and 'id="resolve-btn"' not in page.text
    )
    assert (await viewer.post(f"/inbox/{conv}/reply", data={"text": "x"}, headers=HX)).status_code == 403
    assert (await viewer.post(f"/inbox/{conv}/status", data={"status": "resolved"})).status_code == 403
    assert (await viewer.post(f"/inbox/{conv}/read", headers=HX)).status_code == 204


async def test_another_workspace_sees_nothing(app: Any, browser_client: BrowserFactory) -> None:
    other = await browser_client("agent", workspace="Other", name="Oz")
    world = await _world(app)
    try:
        conv = await _inbound(world, "private")
    finally:
        await world.close()
    assert "private" not in (await other.get("/inbox")).text
    assert (await other.get(f"/inbox/{conv}")).status_code == 404
    assert (await other.post(f"/inbox/{conv}/assign", data={"assignee": "me"}, headers=HX)).status_code == 404


async def test_customer_text_is_escaped(app: Any, browser_client: BrowserFactory) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "<script>alert(1)</script>")
    finally:
        await world.close()
    for path in ("/inbox", f"/inbox/{conv}", f"/inbox/{conv}/timeline"):
        text = (await ann.get(path)).text
        assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text


async def test_presence_from_a_long_polling_page(app: Any, browser_client: BrowserFactory) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "hello")
    finally:
        await world.close()
    assert (await ann.post(f"/inbox/{conv}/presence", data={"state": "replying"})).status_code == 204
    assert (await ann.post(f"/inbox/{conv}/presence", data={"state": "editing"})).status_code == 422
    assert (await ann.post(f"/inbox/{conv + 1000}/presence", data={"state": "replying"})).status_code == 404
    r = await ann.get("/api/v1/events", params={"topics": "inbox", "after": 0, "timeout": 0})
    presence = [e["data"] for e in r.json()["events"] if e["type"] == "presence"]
    assert presence and presence[-1]["conversation_id"] == conv and presence[-1]["state"] == "replying"
    assert presence[-1]["user_name"] == "Ann"


async def test_contact_page_lists_the_contacts_conversations(
    app: Any, browser_client: BrowserFactory
) -> None:
    ann = await browser_client("agent", name="Ann")
    world = await _world(app)
    try:
        conv = await _inbound(world, "about my invoice")
    finally:
        await world.close()
    async with app.state.services.db.transaction() as s:
        contact_id = (await s.get(Conversation, conv)).contact_id  # type: ignore[union-attr]
    page = await ann.get(f"/contacts/{contact_id}")
    assert page.status_code == 200 and f'href="/inbox/{conv}' in page.text and "about my invoice" in page.text
    fragment = await ann.get(f"/contacts/{contact_id}/conversations")
    assert f'href="/inbox/{conv}' in fragment.text

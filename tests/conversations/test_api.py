"""`/api/v1/conversations`: the inbox, replies, read markers and live events."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select, update

from server.conversations.models import Conversation
from server.messages.models import Message

from .support import OUR_SMS, World, wa_text, whatsapp_doc

ClientFactory = Any


async def _sms_conversation(
    world: World, admin: httpx.AsyncClient, text: str = "hi", sender: str = "+15558675310"
) -> dict[str, Any]:
    assert (await world.post_twilio(world.twilio_form(text, sender=sender))).status_code == 200
    items = (await admin.get("/api/v1/conversations", params={"channel": "sms"})).json()["items"]
    return items[0]  # newest activity first: the one that just spoke


async def test_list_and_get_show_both_directions_oldest_first(
    world: World, make_client: ClientFactory
) -> None:
    agent = await make_client("agent")
    conv = await _sms_conversation(world, agent, "first")
    assert conv["status"] == "open" and conv["unread"] == 1 and conv["assignee_id"] is None
    r = await agent.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "On its way!"})
    assert r.status_code == 202, r.text
    reply = r.json()
    assert reply["to"] == "+15558675310" and reply["conversation_id"] == conv["id"]
    await world.post_twilio(world.twilio_form("thanks"))
    detail = (await agent.get(f"/api/v1/conversations/{conv['id']}")).json()
    assert [(m["direction"], m.get("text") or m.get("body")) for m in detail["messages"]] == [
        ("inbound", "first"),
        ("outbound", "On its way!"),
        ("inbound", "thanks"),
    ]
    inbound = detail["messages"][0]
    assert inbound["from"] == "+15558675310" and inbound["to"] == OUR_SMS and inbound["attachments"] == []
    # The reply goes out from the number the customer wrote to.
    async with world.db.transaction() as s:
        m = await s.get(Message, reply["id"])
    assert m is not None and m.from_address == OUR_SMS and m.status == "queued"


async def test_unread_counts_are_per_agent(world: World, make_client: ClientFactory) -> None:
    ann, bob = await make_client("agent"), await make_client("agent")
    conv = await _sms_conversation(world, ann)
    await world.post_twilio(world.twilio_form("are you there?"))
    assert (await ann.post(f"/api/v1/conversations/{conv['id']}/read")).status_code == 204
    assert (await ann.get(f"/api/v1/conversations/{conv['id']}")).json()["unread"] == 0
    assert (await bob.get(f"/api/v1/conversations/{conv['id']}")).json()["unread"] == 2
    await world.post_twilio(world.twilio_form("hello??"))
    items = {c["id"]: c["unread"] for c in (await ann.get("/api/v1/conversations")).json()["items"]}
    assert items[conv["id"]] == 1


async def test_an_inbound_message_reopens_a_resolved_and_wakes_a_snoozed_conversation(
    world: World, make_client: ClientFactory
) -> None:
    agent = await make_client("agent")
    conv = await _sms_conversation(world, agent)
    r = await agent.patch(f"/api/v1/conversations/{conv['id']}", json={"status": "resolved"})
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    await world.post_twilio(world.twilio_form("one more thing"))
    assert (await agent.get(f"/api/v1/conversations/{conv['id']}")).json()["status"] == "open"
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).isoformat()
    r = await agent.patch(f"/api/v1/conversations/{conv['id']}", json={"snooze_until": later})
    assert r.json()["status"] == "snoozed" and r.json()["snooze_until"] is not None
    await world.post_twilio(world.twilio_form("still there?"))
    got = (await agent.get(f"/api/v1/conversations/{conv['id']}")).json()
    assert got["status"] == "open" and got["snooze_until"] is None


async def test_assign_and_filter_by_assignee(world: World, make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    me = (await agent.get("/api/v1/me")).json()["id"]
    a = await _sms_conversation(world, agent, sender="+15550000001")
    await _sms_conversation(world, agent, sender="+15550000002")
    r = await agent.patch(f"/api/v1/conversations/{a['id']}", json={"assignee_id": me})
    assert r.status_code == 200 and r.json()["assignee_id"] == me
    mine = (await agent.get("/api/v1/conversations", params={"assignee": "me"})).json()["items"]
    nobody = (await agent.get("/api/v1/conversations", params={"assignee": "none"})).json()["items"]
    assert (
        [c["id"] for c in mine] == [a["id"]] and a["id"] not in [c["id"] for c in nobody] and len(nobody) == 1
    )
    bad = await agent.patch(f"/api/v1/conversations/{a['id']}", json={"assignee_id": 999999})
    assert bad.status_code == 422
    page = (await agent.get("/api/v1/conversations", params={"limit": 1})).json()
    rest = (
        await agent.get("/api/v1/conversations", params={"limit": 1, "cursor": page["next_cursor"]})
    ).json()
    assert (
        page["next_cursor"] and len(rest["items"]) == 1 and rest["items"][0]["id"] != page["items"][0]["id"]
    )


async def test_viewers_read_and_agents_write(world: World, make_client: ClientFactory) -> None:
    agent, viewer = await make_client("agent"), await make_client("viewer")
    conv = await _sms_conversation(world, agent)
    assert (await viewer.get(f"/api/v1/conversations/{conv['id']}")).status_code == 200
    assert (
        await viewer.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "x"})
    ).status_code == 403
    assert (
        await viewer.patch(f"/api/v1/conversations/{conv['id']}", json={"status": "resolved"})
    ).status_code == 403


async def test_whatsapp_free_form_replies_only_inside_24_hours(
    world: World, make_client: ClientFactory
) -> None:
    agent = await make_client("agent")
    assert (await world.post_whatsapp(whatsapp_doc([wa_text("hola")]))).status_code == 200
    conv = (await agent.get("/api/v1/conversations", params={"channel": "whatsapp"})).json()["items"][0]
    url = f"/api/v1/conversations/{conv['id']}/messages"
    assert (await agent.post(url, json={"text": "Hola! How can we help?"})).status_code == 202
    async with world.db.transaction() as s:
        await s.execute(
            update(Conversation)
            .where(Conversation.id == conv["id"])
            .values(last_inbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=24, minutes=1))
        )
    r = await agent.post(url, json={"text": "Still need help?"})
    assert r.status_code == 422 and "template" in r.json()["detail"]
    assert r.json()["errors"][0]["field"] == "text"
    # A template that names no WhatsApp-approved template is free-form text to WhatsApp.
    plain = await agent.post(
        "/api/v1/templates", json={"name": "followup", "channel": "whatsapp", "body": "Hi {{ name }}"}
    )
    assert plain.status_code == 201, plain.text
    r = await agent.post(url, json={"template_id": plain.json()["id"]})
    assert r.status_code == 422 and "WhatsApp-approved template" in r.json()["detail"]
    assert r.json()["errors"][0]["field"] == "template_id"
    approved = await agent.post(
        "/api/v1/templates",
        json={
            "name": "followup approved",
            "channel": "whatsapp",
            "body": "Hi {{ name }}",
            "whatsapp": {"name": "follow_up", "language": "en", "parameters": ["{{ name }}"]},
        },
    )
    assert approved.status_code == 201, approved.text
    r = await agent.post(url, json={"template_id": approved.json()["id"]})
    assert r.status_code == 202, r.text
    assert r.json()["whatsapp_template"] == {
        "name": "follow_up",
        "language": "en",
        "parameters": ["Kerry Fisher"],
    }
    assert r.json()["body"] == "Hi Kerry Fisher"


async def test_a_reply_with_an_idempotency_key_is_sent_once(world: World, make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    conv = await _sms_conversation(world, agent)
    url = f"/api/v1/conversations/{conv['id']}/messages"
    headers = {"Idempotency-Key": "reply-1"}
    first = await agent.post(url, json={"text": "once"}, headers=headers)
    again = await agent.post(url, json={"text": "once"}, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await agent.post(url, json={"text": "other"}, headers=headers)).status_code == 422
    async with world.db.transaction() as s:
        n = len((await s.execute(select(Message.id).where(Message.conversation_id == conv["id"]))).all())
    assert n == 1


async def test_workspaces_do_not_see_each_others_conversations(
    world: World, make_client: ClientFactory
) -> None:
    ours = await make_client("agent")
    theirs = await make_client("admin", workspace="Globex")
    conv = await _sms_conversation(world, ours)
    assert (await theirs.get("/api/v1/conversations")).json()["items"] == []
    assert (await theirs.get(f"/api/v1/conversations/{conv['id']}")).status_code == 404
    assert (await theirs.post(f"/api/v1/conversations/{conv['id']}/read")).status_code == 404
    assert (
        await theirs.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "x"})
    ).status_code == 404


async def test_conversation_events_reach_the_inbox_over_long_poll(
    world: World, make_client: ClientFactory
) -> None:
    agent = await make_client("agent")
    head = (await agent.get("/api/v1/events", params={"topics": "inbox", "timeout": 0})).json()["last_id"]
    poll = asyncio.create_task(
        agent.get("/api/v1/events", params={"topics": "inbox", "after": head, "timeout": 10})
    )
    await asyncio.sleep(0.2)
    await world.post_twilio(world.twilio_form("live?"))
    events = (await poll).json()["events"]
    got: list[dict[str, Any]] = []
    last = head
    while len(got) < 2:  # created, then message (perhaps in two answers)
        got += [e for e in events if e["type"].startswith("conversation.")]
        if len(got) >= 2:
            break
        last = max([last, *(e["id"] for e in events)])
        events = (
            await agent.get("/api/v1/events", params={"topics": "inbox", "after": last, "timeout": 5})
        ).json()["events"]
    created, message = got[0], got[1]
    assert created["type"] == "conversation.created" and message["type"] == "conversation.message"
    assert set(created["data"]) == {"conversation_id", "contact_id", "status", "assignee_id", "channel"}
    assert message["data"]["direction"] == "inbound" and message["data"]["preview"] == "live?"
    assert set(message["data"]) == {
        "conversation_id",
        "contact_id",
        "message_id",
        "direction",
        "channel",
        "preview",
    }
    # The board shows inbound messages too; contact events of the new contact do not go to the inbox.
    board = (
        await agent.get("/api/v1/events", params={"topics": "board", "after": head, "timeout": 0})
    ).json()["events"]
    assert [e["type"] for e in board] == ["conversation.message"]
    contact = (
        await agent.get(
            "/api/v1/events",
            params={"topics": f"contact:{created['data']['contact_id']}", "after": head, "timeout": 0},
        )
    ).json()["events"]
    assert [e["type"] for e in contact] == ["contact.created", "conversation.created", "conversation.message"]

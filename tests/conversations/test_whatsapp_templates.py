"""WhatsApp replies outside the 24-hour window go out as approved template messages: through the
API, the embedded dispatcher and the WhatsApp adapter to the local fake Cloud API."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from server.conversations.models import Conversation
from server.providers.models import Provider
from server.settings import Settings
from tests.conftest import make_settings
from tests.providers.fakes import FakeProvider, FakeWhatsApp, SentTemplate
from tests.providers.support import good_config

from .support import WA_SECRET, World, settled, wa_text, whatsapp_doc, whatsapp_template

ClientFactory = Any
ServerFactory = Callable[[str], tuple[FakeProvider, str]]
CUSTOMER = "15551234567"  # a recipient the fake Cloud API accepts
APPROVED = {"name": "order_update", "language": "en_US", "parameters": ["{{ name }}", "{{ order }}"]}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(
        db_url, embedded_worker=True, dispatcher_poll_s=0.2, retry_base_s=0.05, retry_max_s=0.2
    )


async def _conversation(
    world: World, agent: httpx.AsyncClient, provider_server: ServerFactory, *, hours_ago: float
) -> tuple[FakeWhatsApp, str]:
    fake, origin = provider_server("whatsapp")
    assert isinstance(fake, FakeWhatsApp)
    async with world.db.transaction() as s:
        await s.execute(
            update(Provider)
            .where(Provider.id == world.providers["whatsapp"])
            .values(config=good_config("whatsapp", origin) | {"app_secret": WA_SECRET})
        )
    doc = whatsapp_doc([wa_text("where is my order?", sender=CUSTOMER)], name="Ada Lovelace", wa_id=CUSTOMER)
    assert (await world.post_whatsapp(doc)).status_code == 200
    conv = (await agent.get("/api/v1/conversations", params={"channel": "whatsapp"})).json()["items"][0]
    async with world.db.transaction() as s:
        await s.execute(
            update(Conversation)
            .where(Conversation.id == conv["id"])
            .values(last_inbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago))
        )
    return fake, f"/api/v1/conversations/{conv['id']}/messages"


async def test_reply_outside_the_window_goes_out_as_the_approved_template(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    fake, url = await _conversation(world, agent, provider_server, hours_ago=30)
    tpl = await whatsapp_template(agent, whatsapp=APPROVED)

    r = await agent.post(url, json={"template_id": tpl, "variables": {"order": "#1001"}})
    assert r.status_code == 202, r.text
    reply = r.json()
    assert reply["body"] == "Hi Ada Lovelace, your order #1001 shipped."  # the timeline's reading
    sent = await settled(agent, reply["id"])
    assert sent["status"] == "sent", sent
    assert sent["provider_message_id"] == fake.issued[0]

    (request,) = fake.requests
    assert request.json["messaging_product"] == "whatsapp"
    assert request.json["to"] == "+" + CUSTOMER
    assert request.json["type"] == "template" and "text" not in request.json
    assert request.json["template"] == {
        "name": "order_update",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ada Lovelace"}, {"type": "text", "text": "#1001"}],
            }
        ],
    }
    assert fake.sent_templates == [SentTemplate("order_update", "en_US", ["Ada Lovelace", "#1001"])]


async def test_a_retry_sends_the_parameters_rendered_at_creation(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    fake, url = await _conversation(world, agent, provider_server, hours_ago=30)
    tpl = await whatsapp_template(agent, whatsapp=APPROVED)
    fake.mode = "rate_limited"
    r = await agent.post(url, json={"template_id": tpl, "variables": {"order": "#1001"}})
    assert r.status_code == 202, r.text
    for _ in range(200):
        if fake.requests:
            break
        await asyncio.sleep(0.02)
    # The template changes meanwhile: the message keeps what it was rendered with.
    changed = APPROVED | {"parameters": ["{{ order }}", "{{ name }}"]}
    assert (await agent.patch(f"/api/v1/templates/{tpl}", json={"whatsapp": changed})).status_code == 200
    fake.mode = "ok"
    sent = await settled(agent, r.json()["id"])
    assert sent["status"] == "sent" and sent["attempts"] >= 2, sent
    first, *_, last = fake.requests
    assert first.json["template"] == last.json["template"]
    assert fake.sent_templates == [SentTemplate("order_update", "en_US", ["Ada Lovelace", "#1001"])]


async def test_without_whatsapp_metadata_outside_the_window_nothing_is_sent(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    fake, url = await _conversation(world, agent, provider_server, hours_ago=24.1)
    plain = await whatsapp_template(agent)
    r = await agent.post(url, json={"template_id": plain, "variables": {"order": "#1001"}})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [
        {
            "field": "template_id",
            "message": "outside the 24-hour window: this template names no WhatsApp-approved template"
            " (its `whatsapp` metadata)",
        }
    ]
    r = await agent.post(url, json={"text": "Still there?"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"
    await asyncio.sleep(0.3)
    assert fake.requests == []


async def test_inside_the_window_text_stays_free_form(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    fake, url = await _conversation(world, agent, provider_server, hours_ago=1)
    r = await agent.post(url, json={"text": "It ships today."})
    assert r.status_code == 202, r.text
    assert r.json()["whatsapp_template"] is None
    assert (await settled(agent, r.json()["id"]))["status"] == "sent"
    (request,) = fake.requests
    assert request.json["type"] == "text"
    assert request.json["text"] == {"preview_url": False, "body": "It ships today."}
    # A template without metadata inside the window is free-form text too.
    plain = await whatsapp_template(agent)
    r = await agent.post(url, json={"template_id": plain, "variables": {"order": "#7"}})
    assert (await settled(agent, r.json()["id"]))["status"] == "sent"
    assert fake.requests[1].json["text"]["body"] == "Hi Ada Lovelace, your order #7 shipped."
    assert fake.sent_templates == []


SHIPPING = {
    "name": "shipping_update",
    "language": "en_US",
    "parameters": ["{{ name }}"],
    "header": {"type": "image", "parameter": "https://cdn.example.test/parcels/{{ order }}.jpg"},
    "buttons": [{"sub_type": "url", "index": 0, "parameter": "track/{{ order }}"}],
}
SHIPPING_COMPONENTS = [
    {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://cdn.example.test/parcels/1001.jpg"}}],
    },
    {"type": "body", "parameters": [{"type": "text", "text": "Ada Lovelace"}]},
    {
        "type": "button",
        "sub_type": "url",
        "index": "0",
        "parameters": [{"type": "text", "text": "track/1001"}],
    },
]


async def test_a_retry_sends_the_header_and_buttons_rendered_at_creation(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    fake, url = await _conversation(world, agent, provider_server, hours_ago=30)
    tpl = await whatsapp_template(agent, whatsapp=SHIPPING)
    fake.mode = "rate_limited"
    r = await agent.post(url, json={"template_id": tpl, "variables": {"order": "1001"}})
    assert r.status_code == 202, r.text
    assert r.json()["whatsapp_template"] == {
        "name": "shipping_update",
        "language": "en_US",
        "parameters": ["Ada Lovelace"],
        "header": {"type": "image", "parameter": "https://cdn.example.test/parcels/1001.jpg"},
        "buttons": [{"sub_type": "url", "index": 0, "parameter": "track/1001"}],
    }
    for _ in range(200):
        if fake.requests:
            break
        await asyncio.sleep(0.02)
    changed = SHIPPING | {
        "header": {"type": "image", "parameter": "https://cdn.example.test/other.jpg"},
        "buttons": [{"sub_type": "url", "index": 0, "parameter": "elsewhere/{{ order }}"}],
    }
    assert (await agent.patch(f"/api/v1/templates/{tpl}", json={"whatsapp": changed})).status_code == 200
    fake.mode = "ok"
    sent = await settled(agent, r.json()["id"])
    assert sent["status"] == "sent" and sent["attempts"] >= 2, sent
    assert len(fake.requests) >= 2
    for request in fake.requests:
        assert request.json["template"]["components"] == SHIPPING_COMPONENTS
    assert fake.sent_templates == [
        SentTemplate(
            "shipping_update",
            "en_US",
            ["Ada Lovelace"],
            ("image", "https://cdn.example.test/parcels/1001.jpg"),
            (("url", 0, "track/1001"),),
        )
    ]


async def test_a_message_from_the_api_carries_header_and_buttons(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    fake, url = await _conversation(world, agent, provider_server, hours_ago=1)
    contact_id = (await agent.get(url.removesuffix("/messages"))).json()["contact_id"]
    tpl = await whatsapp_template(agent, whatsapp=SHIPPING)
    r = await agent.post(
        "/api/v1/messages",
        json={
            "contact_id": contact_id,
            "channel": "whatsapp",
            "template_id": tpl,
            "variables": {"order": "1001"},
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["whatsapp_template"]["buttons"] == [
        {"sub_type": "url", "index": 0, "parameter": "track/1001"}
    ]
    assert (await settled(agent, r.json()["id"]))["status"] == "sent"
    (request,) = fake.requests
    assert request.json["type"] == "template"
    assert request.json["template"]["components"] == SHIPPING_COMPONENTS
    # A media link that does not render as one fails the message, naming the header; nothing is sent.
    r = await agent.post(
        "/api/v1/messages",
        json={
            "contact_id": contact_id,
            "channel": "whatsapp",
            "template_id": tpl,
            "variables": {"order": "a b"},
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "failed"
    assert r.json()["reason"].startswith(
        "template error in whatsapp.header.parameter: is not an http(s) link"
    )
    await asyncio.sleep(0.3)
    assert len(fake.requests) == 1

"""WhatsApp through Twilio: a customer writes to a Twilio WhatsApp number, the agent's reply goes
back through that Twilio connection from that number (the embedded dispatcher, the Twilio adapter,
the local fake Twilio), never through the workspace's Cloud API connection; outside the 24-hour
window as the Content API template the Switchboard template names by `content_sid`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update

from server.conversations.models import Conversation
from server.providers.models import Provider
from server.settings import Settings
from tests.conftest import make_settings
from tests.providers.fakes import FakeProvider, FakeTwilio, FakeWhatsApp
from tests.providers.support import good_config

from .support import OUR_WA, WA_SECRET, World, settled, wa_text, whatsapp_doc, whatsapp_template

ClientFactory = Any
ServerFactory = Callable[[str], tuple[FakeProvider, str]]
CUSTOMER = "+15551234567"  # a recipient both fakes accept
CONTENT_SID = "HX" + "5b" * 16
BOTH = {
    "name": "order_update",
    "language": "en_US",
    "content_sid": CONTENT_SID,
    "parameters": ["{{ name }}", "{{ order }}"],
}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(
        db_url, embedded_worker=True, dispatcher_poll_s=0.2, retry_base_s=0.05, retry_max_s=0.2
    )


async def _connect(world: World, provider_server: ServerFactory) -> tuple[FakeTwilio, FakeWhatsApp]:
    """Both connections point at their fakes: Twilio (its row made for sms) and the Cloud API."""
    twilio, twilio_origin = provider_server("twilio")
    cloud, cloud_origin = provider_server("whatsapp")
    assert isinstance(twilio, FakeTwilio) and isinstance(cloud, FakeWhatsApp)
    async with world.db.transaction() as s:
        await s.execute(
            update(Provider)
            .where(Provider.id == world.providers["twilio"])
            .values(config=good_config("twilio", twilio_origin))
        )
        await s.execute(
            update(Provider)
            .where(Provider.id == world.providers["whatsapp"])
            .values(config=good_config("whatsapp", cloud_origin) | {"app_secret": WA_SECRET}, priority=1)
        )
    return twilio, cloud


async def _twilio_conversation(world: World, agent: httpx.AsyncClient, *, hours_ago: float) -> str:
    form = world.twilio_form("where is my order?", sender=f"whatsapp:{CUSTOMER}", To=f"whatsapp:{OUR_WA}")
    form["ProfileName"] = "Ada Lovelace"
    assert (await world.post_twilio(form, token=FakeTwilio.auth_token)).status_code in (200, 204)
    return await _age(world, agent, hours_ago)


async def _age(world: World, agent: httpx.AsyncClient, hours_ago: float) -> str:
    conv = (await agent.get("/api/v1/conversations", params={"channel": "whatsapp"})).json()["items"][0]
    async with world.db.transaction() as s:
        await s.execute(
            update(Conversation)
            .where(Conversation.id == conv["id"])
            .values(last_inbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago))
        )
    return f"/api/v1/conversations/{conv['id']}/messages"


async def test_a_reply_inside_the_window_goes_through_twilio_from_the_number_written_to(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    twilio, cloud = await _connect(world, provider_server)
    url = await _twilio_conversation(world, agent, hours_ago=1)

    r = await agent.post(url, json={"text": "It ships today."})
    assert r.status_code == 202, r.text
    sent = await settled(agent, r.json()["id"])
    assert sent["status"] == "sent", sent
    assert (sent["provider_id"], sent["provider_message_id"]) == (world.providers["twilio"], twilio.issued[0])
    (request,) = twilio.requests
    assert request.form["To"] == f"whatsapp:{CUSTOMER}"
    assert request.form["From"] == f"whatsapp:{OUR_WA}"  # the number the customer wrote to
    assert request.form["Body"] == "It ships today."
    assert "ContentSid" not in request.form
    assert cloud.requests == []  # the Cloud API connection comes first for whatsapp, yet is not used


async def test_outside_the_window_a_template_goes_as_its_content_sid_and_variables(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    twilio, cloud = await _connect(world, provider_server)
    url = await _twilio_conversation(world, agent, hours_ago=30)
    tpl = await whatsapp_template(agent, whatsapp=BOTH)

    r = await agent.post(url, json={"template_id": tpl, "variables": {"order": "#1001"}})
    assert r.status_code == 202, r.text
    assert r.json()["body"] == "Hi Ada Lovelace, your order #1001 shipped."  # the timeline's reading
    assert r.json()["whatsapp_template"]["content_sid"] == CONTENT_SID
    assert (await settled(agent, r.json()["id"]))["status"] == "sent"
    (request,) = twilio.requests
    assert request.form["ContentSid"] == CONTENT_SID
    assert orjson.loads(request.form["ContentVariables"]) == {"1": "Ada Lovelace", "2": "#1001"}
    assert "Body" not in request.form
    assert (request.form["From"], request.form["To"]) == (f"whatsapp:{OUR_WA}", f"whatsapp:{CUSTOMER}")
    assert cloud.requests == []


async def test_outside_the_window_a_template_without_a_content_sid_is_refused(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    twilio, cloud = await _connect(world, provider_server)
    url = await _twilio_conversation(world, agent, hours_ago=30)
    meta_only = await whatsapp_template(agent, whatsapp={k: v for k, v in BOTH.items() if k != "content_sid"})

    r = await agent.post(url, json={"template_id": meta_only, "variables": {"order": "#1001"}})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {
            "field": "template_id",
            "message": "outside the 24-hour window: the customer wrote through Twilio, which sends an"
            " approved template by its Content SID, and this template has no `whatsapp.content_sid`",
        }
    ]
    # Inside the window the same template is free-form text: Twilio takes a Body then.
    url = await _age(world, agent, 1)
    r = await agent.post(url, json={"template_id": meta_only, "variables": {"order": "#7"}})
    assert r.status_code == 202, r.text
    assert r.json()["whatsapp_template"] is None
    assert (await settled(agent, r.json()["id"]))["status"] == "sent"
    (request,) = twilio.requests
    assert request.form["Body"] == "Hi Ada Lovelace, your order #7 shipped."
    assert cloud.requests == []


async def test_a_cloud_api_customer_is_answered_through_the_cloud_api(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    twilio, cloud = await _connect(world, provider_server)
    # Twilio also sends whatsapp now, and comes first for it: a reply still goes where the customer wrote.
    async with world.db.transaction() as s:
        await s.execute(
            update(Provider)
            .where(Provider.id == world.providers["twilio"])
            .values(channel="whatsapp", priority=0)
        )
    doc = whatsapp_doc([wa_text("hello", sender=CUSTOMER.lstrip("+"))], name="Ada Lovelace", wa_id=CUSTOMER)
    assert (await world.post_whatsapp(doc)).status_code == 200
    url = await _age(world, agent, 30)
    tpl = await whatsapp_template(agent, whatsapp=BOTH)
    r = await agent.post(url, json={"template_id": tpl, "variables": {"order": "#1001"}})
    assert r.status_code == 202, r.text
    sent = await settled(agent, r.json()["id"])
    assert (sent["status"], sent["provider_id"]) == ("sent", world.providers["whatsapp"]), sent
    (request,) = cloud.requests
    assert request.json["template"]["name"] == "order_update"
    assert twilio.requests == []
    # A template that names only a Content SID cannot go through the Cloud API outside the window.
    twilio_only = await whatsapp_template(
        agent, name="Twilio only", whatsapp={k: v for k, v in BOTH.items() if k not in ("name", "language")}
    )
    r = await agent.post(url, json={"template_id": twilio_only, "variables": {"order": "#1"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "template_id", r.text
    assert "no `whatsapp.name`" in r.json()["errors"][0]["message"]


async def test_a_reply_whose_connection_is_disabled_goes_through_the_channels_connections(
    world: World, make_client: ClientFactory, provider_server: ServerFactory
) -> None:
    agent = await make_client("agent")
    twilio, cloud = await _connect(world, provider_server)
    url = await _twilio_conversation(world, agent, hours_ago=1)
    async with world.db.transaction() as s:
        await s.execute(
            update(Provider).where(Provider.id == world.providers["twilio"]).values(enabled=False)
        )
    r = await agent.post(url, json={"text": "It ships today."})
    sent = await settled(agent, r.json()["id"])
    assert (sent["status"], sent["provider_id"]) == ("sent", world.providers["whatsapp"]), sent
    assert twilio.requests == [] and len(cloud.requests) == 1

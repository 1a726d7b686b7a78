"""Twilio incoming SMS/MMS and WhatsApp-via-Twilio on the connection's webhook URL."""

from __future__ import annotations

from sqlalchemy import select

from server.contacts.models import Audit, Contact
from server.conversations.models import Conversation, InboundMessage
from server.messages.models import MessageEvent

from .support import OUR_SMS, TW_TOKEN, World


async def test_incoming_sms_is_stored_threaded_and_answered_with_empty_twiml(world: World) -> None:
    r = await world.post_twilio(world.twilio_form("Is my order on its way?"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    assert r.content.endswith(b"<Response/>")
    async with world.db.transaction() as s:
        msg = (await s.execute(select(InboundMessage))).scalar_one()
        conv = await s.get(Conversation, msg.conversation_id)
        events = (await s.execute(select(MessageEvent))).scalars().all()
    assert conv is not None and conv.channel == "sms" and conv.status == "open"
    assert (msg.from_address, msg.to_address, msg.text) == (
        "+15558675310",
        OUR_SMS,
        "Is my order on its way?",
    )
    assert events == []  # not mistaken for a status callback


async def test_unknown_sender_becomes_a_contact_with_an_audit_row_saying_so(world: World) -> None:
    await world.post_twilio(world.twilio_form("hello", sender="+447700900123"))
    async with world.db.transaction() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        audit = (await s.execute(select(Audit).where(Audit.contact_id == contact.id))).scalars().all()
    assert contact.phone == "+447700900123" and contact.version == 1
    source = [a for a in audit if a.field == "source"]
    assert len(source) == 1 and source[0].new["inbound"] == "sms" and source[0].user_id is None
    assert {a.field for a in audit} >= {"phone", "source"}


async def test_known_sender_by_extra_phone_lands_in_their_conversation(world: World, make_client) -> None:  # type: ignore[no-untyped-def]
    admin = await make_client("admin")
    c = (await admin.post("/api/v1/contacts", json={"name": "Ann", "phone": "+15551230000"})).json()
    r = await admin.post(
        f"/api/v1/contacts/{c['id']}/identities", json={"kind": "phone", "value": "+15559990000"}
    )
    assert r.status_code in (200, 201), r.text
    await world.post_twilio(world.twilio_form("from my work phone", sender="+15559990000"))
    async with world.db.transaction() as s:
        conv = (await s.execute(select(Conversation))).scalar_one()
        n_contacts = len((await s.execute(select(Contact))).scalars().all())
    assert conv.contact_id == c["id"] and n_contacts == 1


async def test_mms_media_are_listed_as_attachments(world: World) -> None:
    form = world.twilio_form(
        "",
        NumMedia="2",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME0a",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1b",
        MediaContentType1="application/pdf",
    )
    assert (await world.post_twilio(form)).status_code == 200
    async with world.db.transaction() as s:
        msg = (await s.execute(select(InboundMessage))).scalar_one()
    assert [(a["content_type"], a["provider_media_id"]) for a in msg.attachments] == [
        ("image/jpeg", "ME0a"),
        ("application/pdf", "ME1b"),
    ]
    assert msg.attachments[0]["url"].endswith("/Media/ME0a")


async def test_whatsapp_via_twilio_opens_a_whatsapp_conversation(world: World) -> None:
    form = world.twilio_form(
        "hi on whatsapp", sender="whatsapp:+15558675310", To="whatsapp:" + OUR_SMS, ProfileName="Kim"
    )
    assert (await world.post_twilio(form)).status_code == 200
    async with world.db.transaction() as s:
        conv = (await s.execute(select(Conversation))).scalar_one()
        contact = (await s.execute(select(Contact))).scalar_one()
    assert conv.channel == "whatsapp" and contact.phone == "+15558675310" and contact.name == "Kim"


async def test_a_replayed_incoming_message_answers_200_and_changes_nothing(world: World) -> None:
    form = world.twilio_form("once", sid="SM" + "a" * 32)
    assert (await world.post_twilio(form)).status_code == 200
    before = await world.counts()
    r = await world.post_twilio(form)
    assert r.status_code == 200 and r.content.endswith(b"<Response/>")
    assert await world.counts() == before == (1, 1)


async def test_a_forged_signature_is_refused_and_nothing_is_stored(world: World) -> None:
    r = await world.post_twilio(world.twilio_form("forged"), token="0" * len(TW_TOKEN))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await world.counts() == (0, 0)

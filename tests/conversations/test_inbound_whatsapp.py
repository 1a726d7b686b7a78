"""WhatsApp Cloud API `messages` beside `statuses` in the same signed webhook."""

from __future__ import annotations

from sqlalchemy import select

from server.contacts.models import Contact
from server.conversations.models import InboundMessage

from .support import WA_SECRET, World, wa_text, whatsapp_doc


async def _messages(world: World) -> list[InboundMessage]:
    async with world.db.transaction() as s:
        return list((await s.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars())


async def test_text_media_interactive_and_reaction_messages_are_stored(world: World) -> None:
    items = [
        wa_text("Hello!"),
        {
            "from": "16315551181",
            "id": "wamid.IMG",
            "timestamp": "1764000000",
            "type": "image",
            "image": {
                "caption": "my receipt",
                "mime_type": "image/jpeg",
                "sha256": "x",
                "id": "1003383421387256",
            },
        },
        {
            "from": "16315551181",
            "id": "wamid.DOC",
            "timestamp": "1764000001",
            "type": "document",
            "document": {"filename": "invoice.pdf", "mime_type": "application/pdf", "id": "2003"},
        },
        {
            "from": "16315551181",
            "id": "wamid.AUD",
            "timestamp": "1764000002",
            "type": "audio",
            "audio": {"mime_type": "audio/ogg; codecs=opus", "id": "3003", "voice": True},
        },
        {
            "from": "16315551181",
            "id": "wamid.BTN",
            "timestamp": "1764000003",
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "yes-1", "title": "Yes"}},
        },
        {
            "from": "16315551181",
            "id": "wamid.LST",
            "timestamp": "1764000004",
            "type": "interactive",
            "interactive": {
                "type": "list_reply",
                "list_reply": {"id": "opt-2", "title": "Tomorrow", "description": "9-12"},
            },
        },
        {
            "from": "16315551181",
            "id": "wamid.RCT",
            "timestamp": "1764000005",
            "type": "reaction",
            "reaction": {"message_id": "wamid.OURS", "emoji": "👍"},
        },
    ]
    r = await world.post_whatsapp(whatsapp_doc(items))
    assert r.status_code == 200, r.text
    assert r.json()["inbound"] == {"stored": 7, "duplicates": 0}
    got = await _messages(world)
    assert [m.text for m in got] == ["Hello!", "my receipt", "", "", "Yes", "Tomorrow", "👍"]
    assert got[1].attachments == [
        {
            "name": "image-1003383421387256",
            "content_type": "image/jpeg",
            "size": None,
            "url": None,
            "provider_media_id": "1003383421387256",
        }
    ]
    assert got[2].attachments[0]["name"] == "invoice.pdf"
    assert got[3].attachments[0]["content_type"].startswith("audio/ogg")
    assert got[4].meta["interactive"] == {"type": "button_reply", "id": "yes-1", "title": "Yes"}
    assert got[6].meta["reaction"] == {"message_id": "wamid.OURS", "emoji": "👍"}
    assert {m.conversation_id for m in got} == {got[0].conversation_id}
    async with world.db.transaction() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert (contact.name, contact.phone) == ("Kerry Fisher", "+16315551181")


async def test_statuses_and_messages_in_one_delivery_are_both_handled(world: World) -> None:
    doc = whatsapp_doc(
        [wa_text("hi", wamid="wamid.A")],
        statuses=[
            {"id": "wamid.X", "status": "delivered", "timestamp": "1764000000", "recipient_id": "16315551181"}
        ],
    )
    r = await world.post_whatsapp(doc)
    assert r.status_code == 200
    assert r.json()["received"] == 1 and r.json()["inbound"]["stored"] == 1


async def test_a_replay_changes_nothing_and_a_forgery_stores_nothing(world: World) -> None:
    doc = whatsapp_doc([wa_text("once", wamid="wamid.ONCE")])
    assert (await world.post_whatsapp(doc)).status_code == 200
    r = await world.post_whatsapp(doc)
    assert r.status_code == 200 and r.json()["inbound"] == {"stored": 0, "duplicates": 1}
    forged = await world.post_whatsapp(whatsapp_doc([wa_text("forged")]), secret=WA_SECRET[::-1])
    assert forged.status_code == 401
    assert await world.counts() == (1, 1)

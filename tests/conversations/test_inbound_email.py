"""Inbound email through SendGrid Inbound Parse (raw MIME) and Mailgun Routes forward()."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from server.conversations.models import Conversation, InboundMessage
from server.conversations.threading import reply_address
from server.messages.models import Message

from .support import MG_KEY, World


def mail(
    text: str | None = None,
    *,
    sender: str = "Dana <dana@example.test>",
    to: str = "support@acme.test",
    subject: str = "Help",
    **headers: str,
) -> EmailMessage:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = make_msgid(domain="example.test")
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    if text is not None:
        m.set_content(text)
    return m


async def _inbound(world: World) -> list[InboundMessage]:
    async with world.db.transaction() as s:
        return list((await s.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars())


async def _sent_message(world: World, contact_email: str) -> tuple[int, int]:
    """An outbound email to a new contact, as a campaign or the API makes it: (message id, contact id)."""
    from server.contacts.models import Contact

    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.ws, name=contact_email, email=contact_email, attributes={}, tags=[])
        s.add(c)
        await s.flush()
        m = Message(
            workspace_id=world.ws,
            contact_id=c.id,
            channel="email",
            to_address=contact_email,
            status="sent",
            provider_kind="smtp",
            provider_message_id=f"<sb-{world.ws}-0@acme.test>",
        )
        s.add(m)
        await s.flush()
        m.provider_message_id = f"<sb-{world.ws}-{m.id}@acme.test>"
        return m.id, c.id


async def test_reply_keeps_plain_text_strips_the_quote_and_keeps_the_full_text(world: World) -> None:
    body = "Thanks, that worked!\n\nOn Tue, 3 Feb 2026 at 10:00, Acme <support@acme.test> wrote:\n> Try restarting.\n> Bye\n"
    r = await world.post_sendgrid(mail(body))
    assert r.status_code == 200, r.text
    (m,) = await _inbound(world)
    assert m.text == "Thanks, that worked!"
    assert "Try restarting" in m.full_text and m.html is None
    assert (m.from_address, m.to_address, m.subject) == ("dana@example.test", "support@acme.test", "Help")


async def test_a_reply_without_in_reply_to_is_threaded_by_its_signed_reply_address(world: World) -> None:
    message_id, contact_id = await _sent_message(world, "erin@example.test")
    secret = world.app.state.services.settings.secret_key
    # Erin answers from another address, with a client that drops In-Reply-To and References.
    to = reply_address(secret, world.ws, message_id, "in.acme.test")
    r = await world.post_sendgrid(mail("Yes please", sender="erin.home@example.test", to=to), to=to)
    assert r.status_code == 200, r.text
    (m,) = await _inbound(world)
    async with world.db.transaction() as s:
        conv = await s.get(Conversation, m.conversation_id)
    assert conv is not None and conv.contact_id == contact_id
    # A forged token is not ours: the sender becomes a contact of their own.
    bad = to.replace("reply+", "reply+9").replace("@", "0@")
    await world.post_sendgrid(mail("me too", sender="mallory@example.test", to=bad), to=bad)
    async with world.db.transaction() as s:
        convs = (await s.execute(select(Conversation))).scalars().all()
    assert len(convs) == 2 and contact_id in {c.contact_id for c in convs}


async def test_in_reply_to_matches_our_message_id(world: World) -> None:
    message_id, contact_id = await _sent_message(world, "finn@example.test")
    r = await world.post_sendgrid(
        mail(
            "about that", sender="f.work@example.test", In_Reply_To=f"<sb-{world.ws}-{message_id}@acme.test>"
        )
    )
    assert r.status_code == 200
    async with world.db.transaction() as s:
        conv = (await s.execute(select(Conversation))).scalar_one()
    assert conv.contact_id == contact_id


async def test_campaign_replies_from_different_recipients_never_merge(world: World) -> None:
    m1, c1 = await _sent_message(world, "gus@example.test")
    m2, c2 = await _sent_message(world, "hana@example.test")
    await world.post_sendgrid(
        mail("re 1", sender="gus@example.test", In_Reply_To=f"<sb-{world.ws}-{m1}@acme.test>")
    )
    await world.post_sendgrid(
        mail("re 2", sender="hana@example.test", In_Reply_To=f"<sb-{world.ws}-{m2}@acme.test>")
    )
    async with world.db.transaction() as s:
        convs = {c.contact_id for c in (await s.execute(select(Conversation))).scalars()}
    assert convs == {c1, c2}


async def test_html_only_mail_gets_text_from_its_html(world: World) -> None:
    m = mail(None)
    m.set_content(
        "<html><body><p>Hello <b>team</b>,</p><p>the link is broken &amp; slow.</p>"
        '<div class="gmail_quote">On Monday you wrote: old stuff</div></body></html>',
        subtype="html",
    )
    assert (await world.post_sendgrid(m)).status_code == 200
    (got,) = await _inbound(world)
    assert got.text == "Hello team,\n\nthe link is broken & slow."
    assert "old stuff" in got.full_text and got.html is not None and "<b>team</b>" in got.html


async def test_non_utf8_charsets_are_decoded(world: World) -> None:
    latin = mail(None, sender="zoe@example.test", subject="Réclamation")
    latin.set_content("Déjà payé, merci à vous.", charset="iso-8859-1", cte="8bit")
    assert b"D\xe9j\xe0" in bytes(latin)  # really ISO-8859-1 on the wire
    assert (await world.post_sendgrid(latin)).status_code == 200
    japanese = mail(None, sender="taro@example.test", subject="お問い合わせ")
    japanese.set_content("注文が届きません。", charset="shift_jis", cte="base64")
    assert (await world.post_sendgrid(japanese)).status_code == 200
    got = await _inbound(world)
    assert [g.text for g in got] == ["Déjà payé, merci à vous.", "注文が届きません。"]
    assert got[0].subject == "Réclamation" and got[1].subject == "お問い合わせ"


async def test_attachments_and_a_forwarded_chain_are_kept(world: World) -> None:
    fwd = mail(
        "FYI, see below.\n\n---------- Forwarded message ---------\nFrom: Bob <bob@example.test>\n"
        "Subject: broken\n\nThe app crashes on start.\n",
        subject="Fwd: broken",
    )
    fwd.add_attachment(b"%PDF-1.4 fake" * 10, maintype="application", subtype="pdf", filename="report.pdf")
    original = mail("the original", sender="bob@example.test", subject="broken")
    fwd.add_attachment(original)  # forwarded as an attachment too (message/rfc822)
    assert (await world.post_sendgrid(fwd)).status_code == 200
    (got,) = await _inbound(world)
    assert "The app crashes on start." in got.text  # a forward is content, not quoted history
    assert [(a["name"], a["content_type"]) for a in got.attachments] == [
        ("report.pdf", "application/pdf"),
        ("broken.eml", "message/rfc822"),
    ]
    assert got.attachments[0]["size"] == len(b"%PDF-1.4 fake" * 10)


async def test_sendgrid_needs_its_token_and_a_replay_changes_nothing(world: World) -> None:
    m = mail("once")
    assert (await world.post_sendgrid(m, token="wrong")).status_code == 401
    assert (await world.post_sendgrid(m, token="")).status_code == 401
    assert await world.counts() == (0, 0)
    assert (await world.post_sendgrid(m)).status_code == 200
    r = await world.post_sendgrid(m)
    assert r.status_code == 200 and r.json() == {"stored": 0, "duplicates": 1}
    assert await world.counts() == (1, 1)


def _mailgun_fields(**extra: str) -> dict[str, str]:
    fields = {
        "recipient": "support@acme.test",
        "sender": "ivy@example.test",
        "from": "Ivy <ivy@example.test>",
        "subject": "Re: your order",
        "body-plain": "Works now.\n\nOn Mon, Acme wrote:\n> did it work?\n",
        "stripped-text": "Works now.",
        "body-html": "<p>Works now.</p>",
        "Message-Id": "<CAF=ivy-1@mail.example.test>",
        "To": "support@acme.test",
    }
    fields.update(extra)
    return fields


async def test_mailgun_route_post_is_verified_stored_and_deduplicated(world: World) -> None:
    files = [("attachment-1", "photo.png", b"\x89PNG....", "image/png")]
    r = await world.post_mailgun(_mailgun_fields(), files=files)
    assert r.status_code == 200, r.text
    (m,) = await _inbound(world)
    assert (m.text, m.provider_message_id, m.from_address) == (
        "Works now.",
        "CAF=ivy-1@mail.example.test",
        "ivy@example.test",
    )
    assert "did it work?" in m.full_text and m.html == "<p>Works now.</p>"
    assert m.attachments == [
        {"name": "photo.png", "content_type": "image/png", "size": 8, "url": None, "provider_media_id": None}
    ]
    again = await world.post_mailgun(_mailgun_fields())
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert await world.counts() == (1, 1)


async def test_mailgun_forged_or_stale_signatures_are_refused(world: World) -> None:
    assert (await world.post_mailgun(_mailgun_fields(), key=MG_KEY[::-1])).status_code == 401
    assert (await world.post_mailgun(_mailgun_fields(), ts=1_000_000_000)).status_code == 401
    assert await world.counts() == (0, 0)


async def test_mailgun_references_thread_into_an_earlier_inbound_message(world: World) -> None:
    await world.post_mailgun(_mailgun_fields())
    # The same person writes again from another address, referencing their first message.
    r = await world.post_mailgun(
        _mailgun_fields(
            **{
                "sender": "ivy.other@example.test",
                "from": "ivy.other@example.test",
                "Message-Id": "<second@mail.example.test>",
                "References": "<CAF=ivy-1@mail.example.test>",
            }
        )
    )
    assert r.status_code == 200
    got = await _inbound(world)
    assert len(got) == 2 and got[0].conversation_id == got[1].conversation_id


async def test_a_mailgun_signature_replayed_with_other_content_is_refused(world: World) -> None:
    assert (await world.post_mailgun(_mailgun_fields(), tok="t" * 50)).status_code == 200
    # The provider's retry of the same post: accepted as a repeat.
    again = await world.post_mailgun(_mailgun_fields(), tok="t" * 50)
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    # A captured signature carrying another message: refused, nothing stored.
    forged = _mailgun_fields(**{"Message-Id": "<evil@x.test>", "stripped-text": "wire the money"})
    assert (await world.post_mailgun(forged, tok="t" * 50)).status_code == 401
    assert await world.counts() == (1, 1)

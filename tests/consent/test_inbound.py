"""An email to the List-Unsubscribe `mailto:` address, received on the inbound email path
(server/conversations), opts its contact out; keywords have their own tests (test_keywords.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from server.consent import tokens
from server.consent.models import ConsentCurrent
from server.contacts.models import Contact
from server.settings import Settings
from tests.conftest import make_settings
from tests.conversations.support import World


@pytest.fixture
def settings(db_url: str) -> Settings:
    """No public URL: the conversation helpers sign Twilio requests for the URL as requested."""
    return make_settings(db_url)


@pytest.fixture
async def world(app: Any) -> AsyncIterator[World]:
    w = await World(app).build()
    yield w
    await w.close()


async def _current(world: World) -> dict[tuple[str, str], tuple[str, str]]:
    async with world.db.sessions() as s:
        rows = (await s.execute(select(ConsentCurrent))).scalars()
        return {(r.channel, r.scope): (r.state, r.source) for r in rows}


async def test_an_email_to_the_unsubscribe_mailto_opts_out(app: Any, world: World) -> None:
    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.ws, name="Ada", email="ada@example.test", attributes={}, tags=[])
        s.add(c)
        await s.flush()
        contact_id = c.id
    local = tokens.mailbox(
        app.state.services.settings.secret_key, workspace_id=world.ws, contact_id=contact_id, channel="email"
    )
    to = f"{local.upper()}@in.acme.test"  # mail systems may fold the case
    mail = EmailMessage()
    mail["From"] = "ada@example.test"
    mail["To"] = to
    mail["Subject"] = "unsubscribe"
    mail["Message-Id"] = "<u1@example.test>"
    mail.set_content("")
    r = await world.post_sendgrid(mail, to=to)
    assert r.status_code == 200, r.text
    assert await _current(world) == {("email", "all"): ("opted_out", "list-unsubscribe-post")}


async def test_a_mailto_of_another_workspace_or_forged_changes_nothing(app: Any, world: World) -> None:
    async with world.db.transaction() as s:
        c = Contact(workspace_id=world.ws, name="Ada", email="ada@example.test", attributes={}, tags=[])
        s.add(c)
        await s.flush()
        contact_id = c.id
    secret = app.state.services.settings.secret_key
    other = tokens.mailbox(secret, workspace_id=world.ws + 1000, contact_id=contact_id, channel="email")
    mine = tokens.mailbox(secret, workspace_id=world.ws, contact_id=contact_id, channel="email")
    forged = mine[:-2] + ("aa" if not mine.endswith("aa") else "bb")
    for n, local in enumerate((other, forged)):
        mail = EmailMessage()
        mail["From"] = "someone@example.test"
        mail["To"] = f"{local}@in.acme.test"
        mail["Subject"] = "x"
        mail["Message-Id"] = f"<f{n}@example.test>"
        mail.set_content("x")
        assert (await world.post_sendgrid(mail, to=f"{local}@in.acme.test")).status_code == 200
    assert await _current(world) == {}

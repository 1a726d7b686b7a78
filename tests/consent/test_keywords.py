"""SMS/WhatsApp keywords: STOP and friends opt out, START opts back in, HELP is answered, Twilio's
OptOutType wins; each keyword in any case and spacing, and nothing else is a keyword."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from server.consent import service
from server.consent.keywords import Action, InboundKeyword, apply_keyword, keyword_of
from server.consent.models import Consent, ConsentCurrent
from server.contacts.models import Contact
from server.db import Database
from server.settings import Settings
from server.workspaces.models import Workspace
from tests.conftest import make_settings

OUR_NUMBER = "+15550001111"
STOPS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
STARTS = ["START", "UNSTOP", "YES"]


@pytest.fixture
async def people(db_url: str) -> Any:
    db = Database(db_url)
    async with db.transaction() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        await s.flush()
        c = Contact(workspace_id=ws.id, name="Ada", phone="+14155552671", attributes={}, tags=[])
        s.add(c)
        await s.flush()
        ids = (ws.id, c.id)
    try:
        yield db, *ids
    finally:
        await db.dispose()


def _inbound(ws: int, contact: int, text: str, **over: Any) -> InboundKeyword:
    fields: dict[str, Any] = {
        "workspace_id": ws,
        "contact_id": contact,
        "channel": "sms",
        "text": text,
        "to_address": OUR_NUMBER,
        "inbound_message_id": 99,
    }
    return InboundKeyword(**(fields | over))


async def _apply(db: Database, message: InboundKeyword, settings: Settings | None = None) -> Any:
    async with db.transaction() as s:
        return await apply_keyword(s, message, settings=settings or make_settings("sqlite+aiosqlite://"))


async def _states(db: Database, contact: int) -> dict[tuple[str, str], str]:
    async with db.sessions() as s:
        rows = await s.execute(select(ConsentCurrent).where(ConsentCurrent.contact_id == contact))
        return {(r.channel, r.scope): r.state for r in rows.scalars()}


@pytest.mark.parametrize("word", STOPS + STARTS + ["HELP", "INFO"])
def test_each_keyword_in_any_case_and_spacing_is_recognised(word: str) -> None:
    for text in (word, word.lower(), f"  {word.title()} \n", f"\t{word}\t"):
        assert keyword_of(text) == word
    for text in (f"{word} please", f"{word}!", f"please {word}", f"{word[:-1]}"):
        assert keyword_of(text) is None


def test_other_messages_are_not_keywords() -> None:
    for text in ("stop sending me ads", "Is my order ready?", "", "S T O P", "STOP."):
        assert keyword_of(text) is None


@pytest.mark.parametrize("word", [w for w in STOPS if w != "STOPALL"])
async def test_a_stop_opts_out_of_the_number_written_to(people: Any, word: str) -> None:
    db, ws, contact = people
    done = await _apply(db, _inbound(ws, contact, f" {word.lower()} "))
    assert (done.action, done.changed, done.reply) == (Action.opt_out, True, None)  # the provider answers
    assert await _states(db, contact) == {("sms", OUR_NUMBER): "opted_out"}
    async with db.sessions() as s:
        [row] = (await s.execute(select(Consent))).scalars()
    assert (row.source, row.evidence) == ("keyword", {"keyword": word, "inbound_message_id": 99})
    async with db.sessions() as s:
        assert await service.opted_out(s, [(contact, "sms")]) == {(contact, "sms")}


async def test_stopall_opts_out_of_every_number(people: Any) -> None:
    db, ws, contact = people
    await _apply(db, _inbound(ws, contact, "StopAll"))
    assert await _states(db, contact) == {("sms", "all"): "opted_out"}


async def test_start_after_stop_opts_back_in(people: Any) -> None:
    db, ws, contact = people
    await _apply(db, _inbound(ws, contact, "STOP"))
    again = await _apply(db, _inbound(ws, contact, "STOP"))
    assert again.changed is False
    for word in STARTS:
        await _apply(db, _inbound(ws, contact, "STOPALL"))
        done = await _apply(db, _inbound(ws, contact, word.lower()))
        assert done.action is Action.opt_in
        assert set((await _states(db, contact)).values()) == {"opted_in"}
        async with db.sessions() as s:
            assert await service.opted_out(s, [(contact, "sms")]) == set()


async def test_twilios_opt_out_type_is_authoritative(people: Any) -> None:
    db, ws, contact = people
    # Twilio recognised a keyword we do not know (another language): its reading wins
    done = await _apply(db, _inbound(ws, contact, "ARRET", opt_out_type="STOP"))
    assert done.action is Action.opt_out and done.keyword == "STOP"
    async with db.sessions() as s:
        [row] = (await s.execute(select(Consent))).scalars()
    assert row.source == "provider"
    # ...and when Twilio says HELP, our reading of the text does not opt anyone in
    helped = await _apply(db, _inbound(ws, contact, "YES", opt_out_type="HELP"))
    assert helped.action is Action.help
    assert await _states(db, contact) == {("sms", OUR_NUMBER): "opted_out"}


async def test_help_is_answered_when_switchboard_answers_keywords(people: Any) -> None:
    db, ws, contact = people
    ours = make_settings(
        "sqlite+aiosqlite://", keyword_replies="switchboard", keyword_help_text="Acme: call 555"
    )
    done = await _apply(db, _inbound(ws, contact, "info"), ours)
    assert (done.action, done.reply) == (Action.help, "Acme: call 555")
    stop = await _apply(db, _inbound(ws, contact, "stop"), ours)
    assert stop.reply == ours.keyword_stop_text
    assert (await _apply(db, _inbound(ws, contact, "stop"), ours)).reply is None  # not confirmed twice
    assert (await _apply(db, _inbound(ws, contact, "help"))).reply is None  # the provider answers
    assert await _states(db, contact) == {("sms", OUR_NUMBER): "opted_out"}


async def test_whatsapp_stop_opts_out_of_whatsapp_only_and_email_has_no_keywords(people: Any) -> None:
    db, ws, contact = people
    await _apply(db, _inbound(ws, contact, "STOP", channel="whatsapp"))
    assert await _apply(db, _inbound(ws, contact, "STOP", channel="email")) is None
    assert await _apply(db, _inbound(ws, contact, "hello")) is None
    assert await _states(db, contact) == {("whatsapp", OUR_NUMBER): "opted_out"}

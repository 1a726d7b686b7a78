"""SMS and WhatsApp keywords arriving as inbound messages: the ledger, the scope, who answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from server.consent.keywords import Keyword, classify
from server.consent.models import Consent, ConsentCurrent
from server.conversations.models import InboundMessage
from server.messages.models import Message
from server.settings import Settings
from server.workspaces import settings as workspace_settings
from tests.conftest import make_settings
from tests.conversations.support import OUR_SMS, World, wa_text, whatsapp_doc

CUSTOMER = "+15558675310"
OTHER_NUMBER = "+15005550007"  # a second number of the workspace


@pytest.fixture
def settings(db_url: str, request: pytest.FixtureRequest) -> Settings:
    """`keyword_replies` from `@pytest.mark.parametrize("settings", [...], indirect=True)`."""
    return make_settings(db_url, keyword_replies=getattr(request, "param", "provider"))


@pytest.fixture
async def world(app: Any) -> AsyncIterator[World]:
    w = await World(app).build()
    yield w
    await w.close()


async def sms(world: World, body: str, *, to: str = OUR_SMS, **extra: str) -> None:
    r = await world.post_twilio(world.twilio_form(body, sender=CUSTOMER, To=to, **extra))
    assert r.status_code == 200, r.text


async def state(world: World) -> dict[tuple[str, str], str]:
    async with world.db.transaction() as s:
        rows = (await s.execute(select(ConsentCurrent))).scalars()
        return {(r.channel, r.scope): r.state for r in rows}


async def ledger(world: World) -> list[Consent]:
    async with world.db.transaction() as s:
        return list((await s.execute(select(Consent).order_by(Consent.id))).scalars())


async def replies(world: World) -> list[Message]:
    async with world.db.transaction() as s:
        return list((await s.execute(select(Message).order_by(Message.id))).scalars())


# --- what is a keyword -------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"])
@pytest.mark.parametrize("shape", ["{}", " {} ", "\t{}\n", "{}\r\n"])
def test_each_opt_out_word_in_any_case_and_padding_is_an_opt_out(word: str, shape: str) -> None:
    text = shape.format(word)
    assert classify(text) is Keyword.opt_out
    assert classify(text.lower()) is Keyword.opt_out
    assert classify(word.capitalize()) is Keyword.opt_out


def test_the_other_keywords() -> None:
    assert classify(" stopall ") is Keyword.opt_out_all
    assert classify("Start") is Keyword.opt_in
    assert classify("unstop") is Keyword.opt_in
    assert classify("yes") is Keyword.opt_in_if_out
    assert classify("HELP") is Keyword.help
    assert classify("info") is Keyword.help


@pytest.mark.parametrize("text", ["STOP!", "stop please", "please stop", "S T O P", "\u017ftop", "", "STOPP"])
def test_a_sentence_or_punctuated_word_is_not_a_keyword(text: str) -> None:
    assert classify(text) is None


def test_twilio_opt_out_type_decides_whatever_the_body_says() -> None:
    assert classify("ARRET", "STOP") is Keyword.opt_out  # a keyword configured in Twilio's console
    assert classify("STOP", "HELP") is Keyword.help
    assert classify("stopall", "STOP") is Keyword.opt_out_all  # Twilio says STOP; the body says how wide
    assert classify("Hello there", "START") is Keyword.opt_in


# --- the ledger ----------------------------------------------------------------------------------


async def test_stop_opts_the_sender_out_of_the_number_written_to_and_stays_in_the_conversation(
    world: World,
) -> None:
    await sms(world, " Stop ")
    assert await state(world) == {("sms", OUR_SMS): "opted_out"}
    [row] = await ledger(world)
    async with world.db.transaction() as s:
        inbound = (await s.execute(select(InboundMessage))).scalar_one()
    assert (row.source, row.evidence["inbound_message_id"]) == ("keyword", inbound.id)
    assert inbound.text == " Stop "  # the keyword is in the timeline like any message
    assert await replies(world) == []  # provider mode: Twilio answers STOP itself


async def test_stop_with_punctuation_changes_nothing(world: World) -> None:
    await sms(world, "STOP!")
    assert await state(world) == {}


async def test_stopall_opts_out_of_every_number_of_the_workspace(world: World) -> None:
    await sms(world, "STOP", to=OTHER_NUMBER)
    await sms(world, "stopall")
    assert await state(world) == {("sms", OTHER_NUMBER): "opted_out", ("sms", "all"): "opted_out"}


async def test_start_after_stop_opts_back_in_and_start_after_stopall_lifts_both(world: World) -> None:
    await sms(world, "STOP")
    await sms(world, "start")
    assert await state(world) == {("sms", OUR_SMS): "opted_in"}
    await sms(world, "STOPALL")
    await sms(world, "STOP")
    await sms(world, "UNSTOP")
    assert await state(world) == {("sms", OUR_SMS): "opted_in", ("sms", "all"): "opted_in"}
    assert [c.state for c in await ledger(world)] == [
        "opted_out",
        "opted_in",
        "opted_out",
        "opted_out",
        "opted_in",
        "opted_in",
    ]


async def test_yes_is_an_opt_in_only_from_someone_opted_out(world: World) -> None:
    await sms(world, "yes")
    assert await state(world) == {}
    await sms(world, "STOP")
    await sms(world, "YES")
    assert await state(world) == {("sms", OUR_SMS): "opted_in"}


async def test_a_repeated_stop_is_one_ledger_row_and_a_replayed_webhook_is_nothing(world: World) -> None:
    form = world.twilio_form("STOP", sender=CUSTOMER)
    await world.post_twilio(form)
    await world.post_twilio(form)  # the same MessageSid again
    await sms(world, "stop")
    assert len(await ledger(world)) == 1


async def test_opt_out_type_wins_over_the_body(world: World) -> None:
    await sms(world, "ARRET", OptOutType="STOP")
    assert await state(world) == {("sms", OUR_SMS): "opted_out"}
    [row] = await ledger(world)
    assert row.evidence["opt_out_type"] == "STOP"
    await sms(world, "STOP", OptOutType="HELP")  # Twilio says it was a HELP: no opt-out
    assert len(await ledger(world)) == 1


async def test_whatsapp_stop_opts_out_of_whatsapp_only_and_is_confirmed(world: World) -> None:
    r = await world.post_whatsapp(whatsapp_doc([wa_text("STOP")]))
    assert r.status_code == 200, r.text
    assert await state(world) == {("whatsapp", "+15550783881"): "opted_out"}
    [reply] = await replies(world)  # no provider answers keywords on WhatsApp
    assert (reply.channel, reply.category, reply.body) == (
        "whatsapp",
        "transactional",
        workspace_settings.DEFAULT_OPT_OUT,
    )


# --- who answers -------------------------------------------------------------------------------


async def test_help_is_left_to_the_provider_by_default(world: World) -> None:
    await sms(world, "HELP")
    assert await replies(world) == []
    assert await state(world) == {}


@pytest.mark.parametrize("settings", ["switchboard"], indirect=True)
async def test_help_is_answered_once_with_the_workspace_text_when_switchboard_answers(
    world: World, make_client: Any
) -> None:
    admin = await make_client("admin")
    r = await admin.put("/api/v1/workspace/settings", json={"help_text": "Acme alerts. Call 555-0100."})
    assert r.status_code == 200, r.text
    form = world.twilio_form("help", sender=CUSTOMER)
    await world.post_twilio(form)
    await world.post_twilio(form)  # Twilio retries the webhook: still one answer
    [reply] = await replies(world)
    assert (reply.body, reply.to_address, reply.from_address) == (
        "Acme alerts. Call 555-0100.",
        CUSTOMER,
        OUR_SMS,
    )
    assert (reply.category, reply.status, reply.conversation_id is not None) == (
        "transactional",
        "queued",
        True,
    )


@pytest.mark.parametrize("settings", ["switchboard"], indirect=True)
async def test_stop_is_confirmed_once_by_switchboard_and_not_at_all_when_twilio_already_answered(
    world: World,
) -> None:
    await sms(world, "STOP")
    await sms(world, "STOP")  # already out: no second confirmation
    assert [m.body for m in await replies(world)] == [workspace_settings.DEFAULT_OPT_OUT]
    await sms(world, "HELP", OptOutType="HELP")  # Advanced Opt-Out has replied already
    await sms(world, "START", OptOutType="START")
    assert len(await replies(world)) == 1
    assert await state(world) == {("sms", OUR_SMS): "opted_in"}

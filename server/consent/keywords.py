"""SMS and WhatsApp keywords (DESIGN §9): an inbound message that is only a keyword changes consent.

`STOP`, `STOPALL`, `UNSUBSCRIBE`, `CANCEL`, `END`, `QUIT`, `REVOKE`, `OPTOUT` opt the sender out
(scope: the number they wrote to; every number of the workspace for `STOPALL`); `START`,
`UNSTOP`, `YES` opt back in; `HELP`/`INFO` are answered. The whole message, trimmed and in any
case, must be the keyword ("stop sending me ads" is a message for an agent, not a keyword).
Twilio's `OptOutType` (`STOP`, `START`, `HELP`), when it is present, is authoritative: Twilio
applies its own keyword list and per-language variants.

The inbound path (server/conversations, DESIGN §8) calls `apply_keyword` in the transaction that
records the message; the message itself still appears in the conversation."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import service
from server.consent.models import ALL_SCOPE, ConsentSource, ConsentState
from server.settings import Settings

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "UNSTOP", "YES"})
HELP = frozenset({"HELP", "INFO"})
KEYWORD_CHANNELS = frozenset({"sms", "whatsapp"})
# Twilio error 21610: "Attempt to send to unsubscribed recipient" (the recipient sent STOP to Twilio).
TWILIO_UNSUBSCRIBED = "21610"


class Action(enum.StrEnum):
    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"


@dataclass(frozen=True, slots=True)
class InboundKeyword:
    """What `apply_keyword` needs of an inbound message."""

    workspace_id: int
    contact_id: int
    channel: str  # sms | whatsapp
    text: str
    to_address: str = ""  # our number the customer wrote to: the scope of a STOP
    inbound_message_id: int | None = None
    opt_out_type: str | None = None  # Twilio's OptOutType, when the request carried it
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeywordOutcome:
    action: Action
    keyword: str
    changed: bool  # False: the consent already was so (a second STOP)
    reply: str | None  # what we answer, or None when the provider answers (`keyword_replies`)


def keyword_of(text: str) -> str | None:
    """The keyword the whole message is, upper-cased; None for any other message."""
    word = " ".join(text.split()).upper()
    return word if word in OPT_OUT | OPT_IN | HELP else None


def _action(keyword: str) -> Action:
    if keyword in OPT_OUT:
        return Action.opt_out
    if keyword in OPT_IN:
        return Action.opt_in
    return Action.help


_TWILIO_TYPES = {"STOP": Action.opt_out, "START": Action.opt_in, "HELP": Action.help}


async def apply_keyword(
    session: AsyncSession, message: InboundKeyword, *, settings: Settings
) -> KeywordOutcome | None:
    """Record the consent an inbound keyword asks for (in the caller's transaction); None when the
    message is not a keyword. With `OptOutType`, Twilio's reading wins over ours."""
    if message.channel not in KEYWORD_CHANNELS:
        return None
    keyword = keyword_of(message.text)
    twilio = (message.opt_out_type or "").strip().upper()
    if twilio in _TWILIO_TYPES:
        action = _TWILIO_TYPES[twilio]
        keyword = keyword or twilio
        source = ConsentSource.provider
    elif twilio:  # a type Twilio may add later: not ours to guess
        return None
    elif keyword is None:
        return None
    else:
        action = _action(keyword)
        source = ConsentSource.keyword
    changed = False
    if action is not Action.help:
        state = ConsentState.opted_out if action is Action.opt_out else ConsentState.opted_in
        # STOPALL: every number of the workspace. START also lifts a STOPALL: the customer asks to
        # hear from us again, and the dispatcher reads an opt-out at any scope as "no marketing".
        scopes = [ALL_SCOPE] if keyword == "STOPALL" else [message.to_address or ALL_SCOPE]
        if action is Action.opt_in and ALL_SCOPE not in scopes:
            scopes.append(ALL_SCOPE)
        evidence = {"keyword": keyword, **message.evidence}
        if message.inbound_message_id is not None:
            evidence["inbound_message_id"] = message.inbound_message_id
        for scope in scopes:
            done = await service.record(
                session,
                workspace_id=message.workspace_id,
                contact_id=message.contact_id,
                channel=message.channel,
                scope=scope,
                state=state,
                source=source,
                evidence=evidence,
            )
            changed = changed or done.changed
    return KeywordOutcome(action, keyword, changed, _reply(settings, action, changed))


def _reply(settings: Settings, action: Action, changed: bool) -> str | None:
    if settings.keyword_replies != "switchboard":
        return None
    if action is Action.help:
        return settings.keyword_help_text
    if not changed:
        return None  # a repeated STOP is not confirmed again
    return settings.keyword_stop_text if action is Action.opt_out else settings.keyword_start_text

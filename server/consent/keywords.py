"""SMS and WhatsApp keywords (DESIGN §9): STOP and its kin opt the sender out, START opts back in,
HELP is answered.

A keyword is the whole message, trimmed, in any case, in ASCII letters: " stop " and "Stop" are
STOP; "STOP!", "stop please" and "\u017ftop" (long s) are
not (carriers match the bare word; a sentence that contains "stop" is a customer talking, and goes
to an agent). When Twilio sends `OptOutType` (Advanced Opt-Out, which also knows the keywords
configured in its console, in any language), it is authoritative: it alone decides whether the
message is a keyword (the body only tells STOPALL from STOP).

Scope: an opt-out covers the workspace number the customer wrote to (`STOP` to +1555…0100 still
allows messages from +1555…0200, as carriers do); `STOPALL` covers every number of the workspace.
START lifts the opt-out of that number and a STOPALL. `YES` is an opt-in only from someone
currently opted out: otherwise it is an answer ("Will you come? YES"), not a consent.

Who answers: Twilio (Advanced Opt-Out or its default handling) and the carriers already reply to
STOP/START/HELP on SMS, so by default (`SWITCHBOARD_KEYWORD_REPLIES=provider`) Switchboard sends
no reply on SMS, and never when `OptOutType` is present (Twilio has just replied). With
`switchboard` (a number whose provider does not answer), Switchboard replies with the workspace's
texts (server/workspaces/settings.py). WhatsApp has no provider-side keyword handling: Switchboard
always answers there. A reply is a transactional message in the conversation, sent by the
dispatcher; STOP/START are answered only when they changed something."""

from __future__ import annotations

import enum
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import service as consent
from server.consent.models import ALL_SCOPE, ConsentSource, ConsentState
from server.contacts.changes import ContactNotFound
from server.conversations import service as conversations
from server.conversations.inbound import Inbound
from server.messages.claims import Outcome
from server.messages.status import AppliedChange
from server.workspaces import settings as workspace_settings

KeywordReplies = Literal["provider", "switchboard"]
CHANNELS = frozenset({"sms", "whatsapp"})
MAX_SCOPE = 64  # consent.scope
# Twilio's error for a send to a number that replied STOP to the sender.
TWILIO_UNSUBSCRIBED = "21610"


class Keyword(enum.Enum):
    opt_out = "opt_out"
    opt_out_all = "opt_out_all"
    opt_in = "opt_in"
    opt_in_if_out = "opt_in_if_out"  # YES
    help = "help"


WORDS: dict[str, Keyword] = {
    **{w: Keyword.opt_out for w in ("STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")},
    "STOPALL": Keyword.opt_out_all,
    "START": Keyword.opt_in,
    "UNSTOP": Keyword.opt_in,
    "YES": Keyword.opt_in_if_out,
    "HELP": Keyword.help,
    "INFO": Keyword.help,
}
OPT_OUT_TYPES = {"STOP": Keyword.opt_out, "START": Keyword.opt_in, "HELP": Keyword.help}


def classify(text: str, opt_out_type: str | None = None) -> Keyword | None:
    """The keyword a message is, or None (see the module doc for the rule)."""
    word = text.strip()
    word = word.upper() if word.isascii() and word.isalpha() else ""
    if opt_out_type:
        kind = OPT_OUT_TYPES.get(opt_out_type.strip().upper())
        if kind is not None:
            # Twilio says STOP for STOPALL too; the body still tells how wide.
            return Keyword.opt_out_all if kind is Keyword.opt_out and word == "STOPALL" else kind
    return WORDS.get(word)


class Keywords:
    """The inbound hook (`conversations.service.receive(on_stored=…)`), configured once."""

    def __init__(self, replies: KeywordReplies) -> None:
        self.replies = replies

    async def __call__(
        self,
        session: AsyncSession,
        workspace_id: int,
        conv: conversations.ConversationView,
        inbound_id: int,
        msg: Inbound,
    ) -> Keyword | None:
        """Act on a stored inbound message if it is a keyword, in the caller's transaction."""
        if conv.channel not in CHANNELS:
            return None
        opt_out_type = msg.meta.get("OptOutType")
        kind = classify(msg.text, opt_out_type)
        if kind is None:
            return None
        number_scope = (msg.recipient[:320] or ALL_SCOPE)[:MAX_SCOPE]
        evidence = {
            "inbound_message_id": inbound_id,
            **({"opt_out_type": opt_out_type} if opt_out_type else {}),
        }

        async def record(state: ConsentState, scope: str) -> bool:
            recorded = await consent.record(
                session,
                workspace_id=workspace_id,
                contact_id=conv.contact_id,
                channel=conv.channel,
                state=state,
                source=ConsentSource.keyword,
                scope=scope,
                evidence=evidence,
            )
            return recorded.changed

        changed = False
        if kind in (Keyword.opt_out, Keyword.opt_out_all):
            scope = ALL_SCOPE if kind is Keyword.opt_out_all else number_scope
            changed = await record(ConsentState.opted_out, scope)
        elif kind in (Keyword.opt_in, Keyword.opt_in_if_out):
            out = {
                c.scope
                for c in await consent.current(session, workspace_id=workspace_id, contact_id=conv.contact_id)
                if c.channel == conv.channel and c.state == ConsentState.opted_out
            }
            scopes = [s for s in (number_scope, ALL_SCOPE) if s in out]
            if kind is Keyword.opt_in and number_scope not in scopes:
                scopes.insert(0, number_scope)  # START from someone never opted out: their consent
            for scope in scopes:
                changed = await record(ConsentState.opted_in, scope) or changed
            if kind is Keyword.opt_in_if_out and not scopes:
                return None  # an ordinary "yes"
        await self._answer(
            session, workspace_id, conv, inbound_id, kind, changed, answered_by_provider=bool(opt_out_type)
        )
        return kind

    async def _answer(
        self,
        session: AsyncSession,
        workspace_id: int,
        conv: conversations.ConversationView,
        inbound_id: int,
        kind: Keyword,
        changed: bool,
        *,
        answered_by_provider: bool,
    ) -> None:
        if answered_by_provider or (self.replies == "provider" and conv.channel == "sms"):
            return
        ws = await workspace_settings.get(session, workspace_id)
        if kind is Keyword.help:
            text = ws.help_text
        elif not changed:
            return
        elif kind in (Keyword.opt_out, Keyword.opt_out_all):
            text = ws.opt_out_reply
        else:
            text = ws.opt_in_reply
        if not text:
            return
        await conversations.reply(
            session,
            workspace_id=workspace_id,
            conversation_id=conv.id,
            user_id=None,
            text=text,
            template_id=None,
            variables={},
            idempotency_key=f"keyword-reply-{inbound_id}",  # one answer per inbound message
        )


def provider_opt_out_scope(kind: str, code: str | None, sender: str) -> str | None:
    """The scope to record as opted out when a send failed because the recipient opted out at the
    provider (Twilio 21610: they replied STOP to `sender`), else None."""
    if kind == "twilio" and code == TWILIO_UNSUBSCRIBED:
        return (sender or ALL_SCOPE)[:MAX_SCOPE]
    return None


async def record_provider_opt_outs(
    session: AsyncSession, outcomes: list[Outcome], applied: list[AppliedChange]
) -> None:
    """The opt-outs providers reported on sends (`Outcome.opt_out_scope`), in the transaction that
    writes the outcomes (only those written: a fenced-off stale claim records nothing)."""
    written = {c.message_id for c in applied}
    for o in outcomes:
        m = o.message
        if o.opt_out_scope is None or m.contact_id is None or m.id not in written:
            continue
        try:
            await consent.record(
                session,
                workspace_id=m.workspace_id,
                contact_id=m.contact_id,
                channel=m.channel,
                state=ConsentState.opted_out,
                source=ConsentSource.provider,
                scope=o.opt_out_scope,
                evidence={"message_id": m.id, "provider": o.provider_kind, "error": TWILIO_UNSUBSCRIBED},
            )
        except ContactNotFound:
            continue  # deleted since: nobody left to record it for

"""Acting on an unsubscribe request: a `/u/{token}` link (the pages in ui/unsubscribe.py), or an
email to the `mailto:` of `List-Unsubscribe` (the inbound path, server/consent/inbound.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import service, tokens
from server.consent.models import ConsentSource, ConsentState
from server.contacts.changes import ContactNotFound
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class Outcome:
    request: tokens.Unsubscribe
    changed: bool  # False: already opted out (a repeated POST): nothing written


async def _record(
    session: AsyncSession, asked: tokens.Unsubscribe, source: ConsentSource, evidence: dict[str, object]
) -> Outcome | None:
    try:
        done = await service.record(
            session,
            workspace_id=asked.workspace_id,
            contact_id=asked.contact_id,
            channel=asked.channel,
            scope=asked.scope,
            state=ConsentState.opted_out,
            source=source,
            evidence=evidence,
        )
    except ContactNotFound:  # deleted since, or never in that workspace: nothing to write
        return None
    return Outcome(asked, done.changed)


async def opt_out(
    session: AsyncSession, settings: Settings, token: str, *, source: ConsentSource
) -> Outcome | None:
    """Record the opt-out a token asks for; None when the token is forged, garbled, or its contact
    is gone (nothing is written)."""
    asked = tokens.verify(tokens.secrets_of(settings), token)
    if asked is None:
        return None
    return await _record(session, asked, source, {"token_issued": asked.issued})


async def from_mailto(
    session: AsyncSession, settings: Settings, *, workspace_id: int, recipient: str, inbound_message_id: int
) -> Outcome | None:
    """An email received by `workspace_id`'s connection at `unsubscribe+…@` (RFC 2369 mailto)."""
    asked = tokens.verify_mailbox(
        tokens.secrets_of(settings), workspace_id, recipient.strip().rpartition("@")[0]
    )
    if asked is None:
        return None
    return await _record(
        session, asked, ConsentSource.list_unsubscribe_post, {"inbound_message_id": inbound_message_id}
    )

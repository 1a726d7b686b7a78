"""Acting on an unsubscribe token (the `/u/{token}` pages in ui/unsubscribe.py, and the
`mailto:` of `List-Unsubscribe` once an inbound email path hands its recipient to `from_mailto`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import service, tokens
from server.consent.models import ConsentSource, ConsentState
from server.contacts.changes import ContactNotFound
from server.settings import Settings

# `List-Unsubscribe: <mailto:unsubscribe+{token}@{inbound domain}>`
MAILTO_LOCAL = re.compile(r"unsubscribe\+([A-Za-z0-9_.=-]{1,400})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Outcome:
    request: tokens.Unsubscribe
    changed: bool  # False: already opted out (a repeated POST): nothing written


def mailto(token: str, inbound_domain: str) -> str:
    return f"mailto:unsubscribe+{token}@{inbound_domain}"


async def opt_out(
    session: AsyncSession, settings: Settings, token: str, *, source: ConsentSource
) -> Outcome | None:
    """Record the opt-out a token asks for; None when the token is forged, garbled, or its contact
    is gone (nothing is written)."""
    asked = tokens.verify(tokens.secrets_of(settings), token)
    if asked is None:
        return None
    try:
        done = await service.record(
            session,
            workspace_id=asked.workspace_id,
            contact_id=asked.contact_id,
            channel=asked.channel,
            scope=asked.scope,
            state=ConsentState.opted_out,
            source=source,
            evidence={"token_issued": asked.issued},
        )
    except ContactNotFound:
        return None
    return Outcome(asked, done.changed)


async def from_mailto(session: AsyncSession, settings: Settings, recipient: str) -> Outcome | None:
    """An email received at `unsubscribe+{token}@…` (RFC 2369 mailto): the same opt-out."""
    local = recipient.strip().rpartition("@")[0]
    m = MAILTO_LOCAL.fullmatch(local)
    if m is None:
        return None
    return await opt_out(session, settings, m.group(1), source=ConsentSource.list_unsubscribe_post)

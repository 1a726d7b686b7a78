"""What an inbound message means for consent (called by server/conversations/service.receive in the
transaction that stores it): an SMS/WhatsApp keyword (`keywords.apply_keyword`), or an email to the
`mailto:unsubscribe+…@` of a List-Unsubscribe header (`unsubscribe.from_mailto`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import keywords
from server.consent.unsubscribe import from_mailto
from server.settings import Settings


async def on_inbound(
    session: AsyncSession,
    settings: Settings,
    *,
    workspace_id: int,
    contact_id: int,
    channel: str,
    text: str,
    recipient: str,
    meta: dict[str, Any],
    inbound_message_id: int,
) -> keywords.KeywordOutcome | None:
    if channel in keywords.KEYWORD_CHANNELS:
        return await keywords.apply_keyword(
            session,
            keywords.InboundKeyword(
                workspace_id=workspace_id,
                contact_id=contact_id,
                channel=channel,
                text=text,
                to_address=recipient,
                inbound_message_id=inbound_message_id,
                opt_out_type=meta.get("OptOutType"),
            ),
            settings=settings,
        )
    if channel == "email":
        await from_mailto(
            session,
            settings,
            workspace_id=workspace_id,  # the receiving connection's: never another tenant's contact
            recipient=recipient,
            inbound_message_id=inbound_message_id,
        )
    return None

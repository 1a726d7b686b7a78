"""The consent hook of the inbound path (`conversations.service.receive(on_stored=…)`): SMS and
WhatsApp keywords (server/consent/keywords.py), and email received at the `mailto:` of a
List-Unsubscribe header (server/consent/unsubscribe.py), in the transaction that stores the message."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.keywords import Keywords
from server.consent.unsubscribe import from_mailto
from server.conversations.inbound import Inbound
from server.conversations.models import Conversation, InboundMessage
from server.settings import Settings


class InboundConsent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keywords = Keywords(settings.keyword_replies)

    async def __call__(
        self, session: AsyncSession, conv: Conversation, row: InboundMessage, msg: Inbound
    ) -> object:
        if conv.channel == "email":
            return await from_mailto(
                session,
                self.settings,
                workspace_id=conv.workspace_id,  # the receiving connection's: never another tenant's
                recipient=msg.recipient,
                inbound_message_id=row.id,
            )
        return await self.keywords(session, conv, row, msg)

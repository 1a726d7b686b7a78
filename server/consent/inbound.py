"""The consent hook of the inbound path (the webhook ingest's `on_stored`, server/webhooks/ingest.py):
SMS and WhatsApp keywords (server/consent/keywords.py), and email received at the `mailto:` of a
List-Unsubscribe header (server/consent/unsubscribe.py), in the transaction that stores the message."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.keywords import Keywords
from server.consent.unsubscribe import from_mailto
from server.conversations.inbound import Inbound
from server.conversations.service import ConversationView
from server.settings import Settings


class InboundConsent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keywords = Keywords(settings.keyword_replies)

    async def __call__(
        self,
        session: AsyncSession,
        workspace_id: int,
        conv: ConversationView,
        inbound_id: int,
        msg: Inbound,
    ) -> object:
        if conv.channel == "email":
            return await from_mailto(
                session,
                self.settings,
                workspace_id=workspace_id,  # the receiving connection's: never another tenant's
                recipient=msg.recipient,
                inbound_message_id=inbound_id,
            )
        return await self.keywords(session, workspace_id, conv, inbound_id, msg)

"""Inbound messages from each provider, normalised to `Inbound` (verified bodies only).

What each provider's inbound covers is listed in docs/operations.md ("Conversations")."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


class MalformedInbound(ValueError):
    """The body is not an inbound message of this provider: answer 400."""


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    content_type: str
    size: int | None = None
    url: str | None = None
    provider_media_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "url": self.url,
            "provider_media_id": self.provider_media_id,
        }


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message a customer sent, as every provider's parser gives it."""

    channel: str  # sms | whatsapp | email
    provider_message_id: str  # MessageSid, wamid, Message-Id without brackets: the dedupe key
    sender: str  # E.164 phone or lower-cased email address
    recipient: str  # our number or address it was sent to (replies go out from it)
    text: str  # for display: quoted history stripped
    full_text: str = ""  # everything that arrived
    html: str | None = None
    subject: str = ""
    attachments: tuple[Attachment, ...] = ()
    sender_name: str = ""  # WhatsApp profile name, email display name: for a new contact
    references: tuple[str, ...] = ()  # In-Reply-To first, then References (newest first), no brackets
    reply_tokens: tuple[str, ...] = ()  # from `reply+<token>@` recipient addresses
    meta: dict[str, Any] = field(default_factory=dict)
    received_at: dt.datetime | None = None

    def preview(self, limit: int = 140) -> str:
        text = " ".join((self.text or self.full_text).split())
        if not text and self.attachments:
            text = f"[{len(self.attachments)} attachment{'s' if len(self.attachments) > 1 else ''}]"
        return text if len(text) <= limit else text[: limit - 1] + "…"


# PostgreSQL refuses NUL in text and JSON: a stand-in keeps the rest of the message.
def no_nul(value: str) -> str:
    return value.replace("\x00", "\ufffd")

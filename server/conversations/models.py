"""Conversations: one contact on one channel, both directions in one timeline (DESIGN §8).

Outbound messages stay `message` rows (linked by `message.conversation_id` when an agent replies;
older ones to the same contact and channel belong to the conversation all the same). Inbound
messages are `inbound_message` rows, deduplicated by the provider's own id."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow


class ConversationStatus(enum.StrEnum):
    open = "open"
    pending = "pending"  # waiting on the customer
    snoozed = "snoozed"  # until `snooze_until`; an inbound message wakes it
    resolved = "resolved"  # an inbound message reopens it


class Conversation(Base):
    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))  # email | sms | whatsapp | chat
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.open.value)
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL"), nullable=True
    )
    snooze_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_message_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The customer's last message: WhatsApp's 24-hour window is counted from it.
    last_inbound_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("workspace_id", "contact_id", "channel"),
        Index("ix_conversation_workspace_activity", "workspace_id", "last_message_at", "id"),
        Index("ix_conversation_contact_id", "contact_id"),
    )


class InboundMessage(Base):
    """A message a customer sent us. `text` is for display (quoted history stripped from email);
    `full_text` keeps everything that arrived."""

    __tablename__ = "inbound_message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    provider_id: Mapped[int] = mapped_column(BigId)
    # MessageSid, wamid or the email's Message-Id (without angle brackets): the dedupe key.
    provider_message_id: Mapped[str] = mapped_column(String(200))
    from_address: Mapped[str] = mapped_column(String(320))
    to_address: Mapped[str] = mapped_column(String(320), default="")  # ours: replies go out from it
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    full_text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # What else the provider said that is worth keeping (reply headers, profile name, reaction...).
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("provider_id", "provider_message_id"),
        Index("ix_inbound_message_conversation", "conversation_id", "id"),
        Index("ix_inbound_message_workspace_pmid", "workspace_id", "provider_message_id"),
    )


class ConversationRead(Base):
    """How far one agent has read one conversation: unread counts are per agent."""

    __tablename__ = "conversation_read"

    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    last_read_inbound_id: Mapped[int] = mapped_column(BigId, default=0)
    read_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboundToken(Base):
    """The secret in a SendGrid Inbound Parse URL (`?token=`): SendGrid signs nothing, so the URL
    itself is the credential. Only its SHA-256 is kept; the token is shown once."""

    __tablename__ = "inbound_token"

    provider_id: Mapped[int] = mapped_column(
        ForeignKey("provider.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

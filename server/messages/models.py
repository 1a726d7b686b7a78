from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow


class MessageStatus(enum.StrEnum):
    """The message status machine (DESIGN §3). Forward moves only; terminal states are final."""

    scheduled = "scheduled"
    queued = "queued"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    bounced = "bounced"
    failed = "failed"
    suppressed = "suppressed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    def can_move_to(self, new: MessageStatus) -> bool:
        """Whether a status change is allowed: never backwards, never out of a terminal state.

        `sending → queued` is the one step back, taken by the dispatcher itself to retry."""
        if self in _TERMINAL:
            return False
        if new in _TERMINAL:
            return True
        if self is MessageStatus.sending and new is MessageStatus.queued:
            return True
        return _ORDER[new] > _ORDER[self]


_ORDER = {s: i for i, s in enumerate(["scheduled", "queued", "sending", "sent", "delivered"])}
_ORDER = {MessageStatus(k): v for k, v in _ORDER.items()}
# `delivered` is reached through `sent` but a later bounce may still follow a delivered event
# from some providers; we keep `delivered` final for the board, as Chatwoot does.
_TERMINAL = frozenset(
    {
        MessageStatus.delivered,
        MessageStatus.bounced,
        MessageStatus.failed,
        MessageStatus.suppressed,
        MessageStatus.canceled,
    }
)


class Message(Base):
    __tablename__ = "message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact.id", ondelete="SET NULL"), nullable=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    to_address: Mapped[str] = mapped_column(String(320), default="")
    template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    campaign_id: Mapped[int | None] = mapped_column(BigId, nullable=True, index=True)
    # Conversations (server/conversations): the conversation an agent's reply belongs to, and the
    # number or address it goes out from (the one the customer wrote to); None: the connection's own.
    conversation_id: Mapped[int | None] = mapped_column(BigId, nullable=True, index=True)
    from_address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # A reply on a phone channel: the connection the customer wrote to, which sends it while it is
    # enabled and sends the channel (server/messages/provider_pool.py); None: the channel's connections.
    via_provider_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    # transactional | marketing (DESIGN §9): consent and the unsubscribe headers apply to marketing.
    category: Mapped[str] = mapped_column(String(16), default="transactional", server_default="transactional")
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # WhatsApp: the approved template it goes out as, rendered at creation so a retry sends the same:
    # `{"name", "language", "parameters": [text, ...]}` (server/templates/whatsapp.py); None: free-form.
    whatsapp_template: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    send_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the dispatcher may next take it: send_at at first, later the retry time.
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # While `sending`: the claim expires here and another worker may take the message back.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.queued.value)
    provider_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    provider_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_message_status_send_at", "status", "send_at"),
        Index("ix_message_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_message_workspace_created_at", "workspace_id", "created_at"),
        Index("ix_message_workspace_contact", "workspace_id", "contact_id"),
        # The contact FK's ON DELETE SET NULL looks messages up by contact alone: without this a
        # contact delete scans every message (a bulk delete, once per contact).
        Index("ix_message_contact_id", "contact_id"),
        Index("ix_message_provider_message_id", "provider_message_id"),
        UniqueConstraint("workspace_id", "idempotency_key"),
    )


class MessageEvent(Base):
    """Status history of a message, and every provider event received (for dedupe).

    An event whose message is unknown is kept with `message_id` NULL for inspection."""

    __tablename__ = "message_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(24))  # a status, or opened/clicked/deferred/...
    provider_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    provider_event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("provider_id", "provider_event_id"),
        Index("ix_message_event_message", "message_id", "id"),
        Index("ix_message_event_at", "at"),  # the daily report reads one day of history
    )


class Suppression(Base):
    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))  # lower-cased email or E.164 phone
    reason: Mapped[str] = mapped_column(String(16))  # bounce|unsubscribe|spam|manual
    source_event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[int | None] = mapped_column(BigId, nullable=True)  # a user, for manual ones
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("workspace_id", "address"),)


class IdempotencyRecord(Base):
    """The first response to an `Idempotency-Key`, replayed for the same key and body."""

    __tablename__ = "idempotency_record"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(40))  # which endpoint
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("workspace_id", "scope", "key"),)


class Campaign(Base):
    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    template_id: Mapped[int] = mapped_column(BigId)
    audience: Mapped[dict[str, Any]] = mapped_column(JSONType)
    category: Mapped[str] = mapped_column(String(16), default="marketing", server_default="marketing")
    send_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # "HH:MM": each message goes at this time in its contact's zone (server/consent/localtime.py),
    # on send_at's date or at the next occurrence.
    local_time: Mapped[str | None] = mapped_column(String(5), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="expanding")  # expanding|done|failed
    total: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    last_contact_id: Mapped[int] = mapped_column(BigId, default=0)  # expansion cursor
    created_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageCount(Base):
    """How many messages created in the hour starting at `bucket` are now in `status`, by channel
    (`server.messages.counters`): the board's counters, maintained rather than recomputed."""

    __tablename__ = "message_count"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspace.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    bucket: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigId, default=0)


class MessageCountDelta(Base):
    """A change to `message_count` written in the transaction that changed the statuses; folded
    into `message_count` (and deleted) by the board feed. Readers add both."""

    __tablename__ = "message_count_delta"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    bucket: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(BigId)

"""The consent ledger (DESIGN §9): every opt-in and opt-out ever recorded, and the current state.

`consent` is append-only history; `consent_state` holds the newest state per contact x channel x
scope and is written in the same transaction as the history row that sets it (`service.record`),
so the dispatcher reads one small indexed table per batch instead of folding the history."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Literal

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow

Category = Literal["transactional", "marketing"]
TRANSACTIONAL: Category = "transactional"
MARKETING: Category = "marketing"
# The scope of an opt-out that covers every sender of the channel (an email unsubscribe, STOPALL);
# otherwise the scope is the sender (the number the customer wrote STOP to).
ALL_SCOPE = "all"


class ConsentState(enum.StrEnum):
    opted_in = "opted_in"
    opted_out = "opted_out"


class ConsentSource(enum.StrEnum):
    link = "link"  # the confirm button of the GET /u/{token} page
    list_unsubscribe_post = "list-unsubscribe-post"  # RFC 8058 one-click from the mail client
    keyword = "keyword"  # STOP/START by SMS or WhatsApp
    provider = "provider"  # the provider says so (Twilio OptOutType, error 21610)
    agent = "agent"  # recorded by an agent (consent given by phone)
    import_ = "import"
    api = "api"


class Consent(Base):
    """One decision in the ledger; `evidence` says what proves it (token, inbound message id)."""

    __tablename__ = "consent"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(64), default=ALL_SCOPE)
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # the user, when one acted
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_consent_contact_id_id", "contact_id", "id"),)


class ConsentCurrent(Base):
    """The newest `consent` row per contact x channel x scope."""

    __tablename__ = "consent_state"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    consent_id: Mapped[int] = mapped_column(BigId)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("contact_id", "channel", "scope"),)

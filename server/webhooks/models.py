from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime


class WebhookToken(Base):
    """A signature token seen from a provider whose signature does not cover the body (Mailgun):
    remembered for the signature's freshness window with a digest of the data it came with, so
    the token is accepted again only with the same data (a retry), never with other data."""

    __tablename__ = "webhook_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex: any token fits, no NUL
    digest: Mapped[str] = mapped_column(String(64))  # sha256 hex of the signed-for event data
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("provider_id", "token_hash"),
        Index("ix_webhook_token_expires_at", "expires_at"),
    )

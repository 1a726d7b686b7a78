from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow


class Provider(Base):
    """A provider connection. `config` holds secrets: the API never returns them."""

    __tablename__ = "provider"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # smtp|sendgrid|mailgun|twilio|whatsapp|slack|sandbox
    channel: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=100)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Key we sign our own (sandbox) webhooks with; providers with their own scheme keep it in config.
    webhook_key: Mapped[str] = mapped_column(String(128))
    send_rate: Mapped[float | None] = mapped_column(Float, nullable=True)  # messages per second
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_provider_workspace_channel", "workspace_id", "channel", "priority"),)

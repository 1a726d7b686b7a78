"""The admin audit log: who did what to the workspace's settings and people (DESIGN §10).

Append-only: rows are written by `server.audit.service.record` in the transaction of the change
they describe and only ever removed by the retention prune. Not the contact change feed
(`server.contacts.models.Audit`), which records field values of contacts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))  # user | api_key | system
    actor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # no FK: outlives its actor
    action: Mapped[str] = mapped_column(String(64))  # dotted: auth.login, provider.updated, …
    target: Mapped[str] = mapped_column(String(200), default="")  # e.g. "provider:7"
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        Index("ix_audit_log_workspace_id", "workspace_id", "id"),
        Index("ix_audit_log_at", "at"),
    )

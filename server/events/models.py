from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow


class Event(Base):
    """The outbox and event log. `(workspace_id, id)` is the key; ids increase strictly within
    a workspace in commit order (see `Workspace.event_seq`). Rows are kept for the retention
    period so clients can resume, and are never deleted because they were sent."""

    __tablename__ = "event"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspace.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(40))
    # Topic keys: message events go to `board`, contact events to `contacts`;
    # any event about a contact also goes to `contact:{contact_id}`.
    contact_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_event_ts", "ts"),)

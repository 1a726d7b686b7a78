from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Boolean, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, utcnow


class Role(enum.StrEnum):
    viewer = "viewer"
    agent = "agent"
    admin = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "agent": 1, "admin": 2}[self.value]


def display_name(name: str | None, email: str) -> str:
    """How a user is shown everywhere (presence, history, the page header): the name, else the email."""
    return name or email


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.agent.value)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("uq_user_account_lower_email", func.lower(email), unique=True),)


class RefreshToken(Base):
    """One issued refresh token. Tokens of a login share a `family_id`; reusing a spent one
    revokes the whole family (RFC 6819 §5.2.2.3, OAuth 2.0 Security BCP §4.14)."""

    __tablename__ = "refresh_token"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Where the token was issued (sign-in or refresh): the "your sessions" list shows them.
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)

"""A workspace's OpenID Connect settings, and which provider account signs in as which user."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow


class SsoConfig(Base):
    """One per workspace. `client_secret` is write-only in the API; `default_role` None means a
    user whose role claim maps to no role is refused rather than let in."""

    __tablename__ = "sso_config"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret: Mapped[str] = mapped_column(Text)
    allowed_domains: Mapped[list[str]] = mapped_column(JSONType, default=list)
    role_claim: Mapped[str] = mapped_column(String(100), default="groups")
    role_map: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    default_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    require_verified_email: Mapped[bool] = mapped_column(Boolean, default=True)
    password_login: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SsoIdentity(Base):
    """A provider account (`issuer`, `subject`) linked to a user: found by this, not by the email
    (which the provider may let its users change), from the second sign-in on."""

    __tablename__ = "sso_identity"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("issuer", "subject"),)

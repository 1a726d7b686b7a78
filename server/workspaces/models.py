from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import BigInteger, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, utcnow


def slugify(name: str) -> str:
    """The URL name of a workspace (`/sso/<slug>/login`): lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63] or "workspace"


def _slug_from_name(context: Any) -> str:
    return slugify(str(context.get_current_parameters()["name"]))


class Workspace(Base):
    """A tenant. `event_seq` is the last event id handed out in this workspace.

    Event ids are taken by incrementing this column inside the writing transaction, so the
    row lock orders them by commit: no reader can see id 11 committed before id 10.
    """

    __tablename__ = "workspace"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), default=_slug_from_name)
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("uq_workspace_lower_name", func.lower(name), unique=True),
        Index("uq_workspace_slug", slug, unique=True),
    )

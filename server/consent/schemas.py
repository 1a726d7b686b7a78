from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from server.api import Out, Query, Schema
from server.pagination import PAGE_LIMIT, PageLimit
from server.templates.schemas import Channel

State = Literal["opted_in", "opted_out"]


class ConsentIn(Schema):
    """Consent an agent records (given by phone, in person…), with a note saying how."""

    channel: Channel
    state: State
    note: str | None = Field(default=None, max_length=2000)


class ConsentItem(Out):
    channel: str
    scope: str
    state: str
    source: str
    at: dt.datetime


class LedgerItem(ConsentItem):
    id: int
    actor_id: int | None
    evidence: dict[str, Any]
    note: str | None


class ConsentList(Out):
    items: list[LedgerItem] | list[ConsentItem]
    next_cursor: str | None = None


class ConsentQuery(Query):
    history: bool = False
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)

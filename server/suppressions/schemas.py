from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from server.api import Out, Query, Schema
from server.pagination import PAGE_LIMIT, PageLimit
from server.suppressions.service import normalize_address

Reason = Literal["bounce", "unsubscribe", "spam", "manual"]


class SuppressionIn(Schema):
    """An address (email, or phone in international form) never to send to."""

    address: str = Field(min_length=3, max_length=320)
    reason: Literal["manual"] = "manual"
    note: str | None = Field(default=None, max_length=2000)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalize_address(value)


class SuppressionOut(Out):
    id: int
    address: str
    reason: str
    note: str | None
    created_by: int | None
    created_at: dt.datetime


class SuppressionQuery(Query):
    q: str | None = Field(default=None, max_length=320)
    reason: Reason | None = None
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)

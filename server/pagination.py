"""Opaque cursors for keyset pagination (`?limit=&cursor=` → `next_cursor`)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from server.errors import Problem

P = TypeVar("P", bound=BaseModel)


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=100)


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "id" or not value.isascii() or not value.isdigit() or len(value) > 18:
            raise ValueError(raw)  # an id the database can hold (int64), not any integer
        return int(value)
    except ValueError:
        raise Problem(
            422, "The cursor is not valid.", errors=[{"field": "query.cursor", "message": "invalid cursor"}]
        ) from None


def page_of(rows: Sequence[Any], limit: int, item: Callable[[Any], Any], page: type[P]) -> P:
    """One page from rows fetched with `limit + 1` (the extra row only says there is a next page)."""
    shown = rows[:limit]
    more = len(rows) > limit
    return page(items=[item(r) for r in shown], next_cursor=encode_cursor(shown[-1].id) if more else None)

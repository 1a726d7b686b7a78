"""Opaque cursors for keyset pagination (`?limit=&cursor=` → `next_cursor`).

`?limit=` defaults to `SWITCHBOARD_PAGE_LIMIT_DEFAULT` and is capped at `SWITCHBOARD_PAGE_LIMIT_MAX`:
the API layer validates query models with those settings as the validation context
(`page_context`), and every list's query declares `limit: PageLimit = PAGE_LIMIT`."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from server.errors import Problem
from server.inputs import Query
from server.settings import Settings

P = TypeVar("P", bound=BaseModel)

DEFAULT_LIMIT = 50  # without a validation context (a model built outside a request)
MAX_LIMIT = 500


def page_context(settings: Settings) -> dict[str, int]:
    return {"page_limit_default": settings.page_limit_default, "page_limit_max": settings.page_limit_max}


def _default(value: Any, info: ValidationInfo) -> Any:
    if value is None or value == "":
        return (info.context or {}).get("page_limit_default", DEFAULT_LIMIT)
    return value


def _capped(value: int, info: ValidationInfo) -> int:
    maximum = int((info.context or {}).get("page_limit_max", MAX_LIMIT))
    if value > maximum:
        raise PydanticCustomError(
            "less_than_equal", "Input should be less than or equal to {le}", {"le": maximum}
        )
    return value


PageLimit = Annotated[int, BeforeValidator(_default), Field(ge=1), AfterValidator(_capped)]
PAGE_LIMIT: Any = Field(default=None, validate_default=True, description="Items per page.")


class PageQuery(Query):
    limit: PageLimit = PAGE_LIMIT
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

"""Request and response shapes of the outgoing-webhook API."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from server.api import Out, Query, Schema
from server.pagination import PAGE_LIMIT, PageLimit

# What an endpoint may subscribe to; "*" means every one of these.
EVENT_TYPES = (
    "message.created",
    "message.status",
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "suppression.created",
)
ALL_EVENTS = "*"


def check_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("the URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("the URL must name a host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("the URL's port is not valid") from None
    if parts.fragment:
        raise ValueError("the URL must not carry a #fragment")
    return url


def check_events(events: list[str]) -> list[str]:
    out: list[str] = []
    for e in events:
        if e != ALL_EVENTS and e not in EVENT_TYPES:
            raise ValueError(f"unknown event type {e!r}; use {', '.join(EVENT_TYPES)} or *")
        if e not in out:
            out.append(e)
    if not out:
        raise ValueError("give at least one event type")
    return out


class EndpointIn(Schema):
    url: str = Field(max_length=2000)
    events: list[str] = Field(max_length=20)
    description: str = Field(default="", max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        return check_events(v)


class EndpointPatch(Schema):
    """`enabled: true` re-enables an endpoint that was disabled after repeated failures."""

    url: str | None = Field(default=None, max_length=2000)
    events: list[str] | None = Field(default=None, max_length=20)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str:
        if v is None:
            raise ValueError("url must be a string")
        return check_url(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str] | None) -> list[str]:
        if v is None:
            raise ValueError("events must be a list")
        return check_events(v)

    @field_validator("description", "enabled")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("must not be null")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> EndpointPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


class EndpointOut(Out):
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    previous_secret_until: dt.datetime | None = Field(
        description="While set and in the future, deliveries carry a second signature with the old secret."
    )
    created_at: dt.datetime


class EndpointWithSecret(EndpointOut):
    """Returned on creation and on rotation only: the secret is never shown again."""

    secret: str


class DeliveryOut(Out):
    id: int
    endpoint_id: int
    event_id: int
    event_type: str
    status: str  # pending | succeeded | failed
    attempts: int
    status_code: int | None
    latency_ms: float | None
    last_error: str | None
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @model_validator(mode="after")
    def _no_next_when_done(self) -> DeliveryOut:
        if self.status != "pending":
            self.next_attempt_at = None
        return self


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any]


class DeliveryQuery(Query):
    status: str | None = Field(default=None, pattern="^(pending|succeeded|failed)$")
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)

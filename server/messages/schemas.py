from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, field_validator, model_validator

from server.api import Out, Query, Schema
from server.consent.localtime import clock
from server.consent.models import Category
from server.messages.models import MessageStatus
from server.pagination import PAGE_LIMIT, PageLimit
from server.templates.schemas import MAX_SOURCE, Channel


def _utc(v: dt.datetime | None) -> dt.datetime | None:
    """A time without an offset is taken as UTC."""
    if v is None:
        return None
    return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


class MessageIn(Schema):
    """A message from a template (`template_id`), or from an inline `subject` and `body`
    (rendered the same way). Without `send_at`, or with one in the past, it is sent now."""

    contact_id: int = Field(ge=1)
    channel: Channel
    template_id: int | None = Field(default=None, ge=1)
    subject: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE)
    variables: dict[str, Any] = Field(default_factory=dict)
    send_at: dt.datetime | None = None
    category: Category = Field(
        default="transactional",
        description="marketing: consent applies, and email carries List-Unsubscribe (DESIGN §9)",
    )

    _send_at = field_validator("send_at")(_utc)

    @model_validator(mode="after")
    def _source(self) -> MessageIn:
        if self.template_id is not None and (self.body is not None or self.subject is not None):
            raise ValueError("give either template_id, or subject and body, not both")
        if self.template_id is None and self.body is None:
            raise ValueError("give template_id, or a body (and a subject for email)")
        return self


class MessageOut(Out):
    id: int
    contact_id: int | None
    channel: str
    to: str
    template_id: int | None
    campaign_id: int | None
    category: str
    subject: str
    body: str
    variables: dict[str, Any]
    # WhatsApp: the approved template it goes out as, `{"name", "language", "parameters"}` as rendered.
    whatsapp_template: dict[str, Any] | None = None
    status: str
    send_at: dt.datetime
    provider: str | None
    provider_id: int | None
    provider_message_id: str | None
    attempts: int
    reason: str | None
    idempotency_key: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sent_at: dt.datetime | None


class MessageEventOut(Out):
    id: int
    status: str
    reason: str | None
    provider_id: int | None
    provider_event_id: str | None
    at: dt.datetime


class MessageDetail(MessageOut):
    events: list[MessageEventOut]


class MessageQuery(Query):
    status: MessageStatus | None = None
    contact_id: int | None = Field(default=None, ge=1)
    campaign_id: int | None = Field(default=None, ge=1)
    channel: Channel | None = None
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)


class Audience(Schema):
    """Who a campaign goes to: contacts with `tag`, and/or matching `q` (as in the contacts list)."""

    tag: str | None = Field(default=None, min_length=1, max_length=64)
    q: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _some(self) -> Audience:
        if self.tag is None and self.q is None:
            raise ValueError("give a tag or q")
        return self


class CampaignIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    template_id: int = Field(ge=1)
    audience: Audience
    send_at: dt.datetime | None = None
    category: Category = "marketing"
    # "HH:MM": each message at this time on its contact's clock, on send_at's (UTC) date or, without
    # send_at, at the next occurrence (server/consent/localtime.py).
    local_time: str | None = None

    _send_at = field_validator("send_at")(_utc)

    @field_validator("local_time")
    @classmethod
    def _local_time(cls, v: str | None) -> str | None:
        if v is not None:
            clock(v)
        return v


class CampaignOut(Out):
    id: int
    name: str
    template_id: int
    audience: dict[str, Any]
    category: str
    send_at: dt.datetime | None
    local_time: str | None
    status: str
    total: int
    created: int
    created_at: dt.datetime

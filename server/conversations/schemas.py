from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from server.api import Out, Query, Schema
from server.messages.schemas import MessageOut
from server.pagination import PAGE_LIMIT, PageLimit
from server.templates.schemas import MAX_SOURCE, Channel

Status = Literal["open", "pending", "snoozed", "resolved"]
_ASSIGNEE = re.compile(r"me|none|[1-9][0-9]{0,17}")


def _utc(v: dt.datetime | None) -> dt.datetime | None:
    if v is None:
        return None
    return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


class ConversationQuery(Query):
    status: Status | None = None
    assignee: str | None = Field(default=None, description="me, none, or a user id")
    channel: Channel | None = None
    contact_id: int | None = Field(default=None, ge=1, le=2**62)
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=200)

    @field_validator("assignee")
    @classmethod
    def _assignee(cls, v: str | None) -> str | None:
        if v is not None and not _ASSIGNEE.fullmatch(v):
            raise ValueError("must be me, none or a user id")
        return v


class ConversationPatch(Schema):
    status: Status | None = None
    assignee_id: int | None = Field(default=None, ge=1, le=2**62)
    snooze_until: dt.datetime | None = None

    _snooze = field_validator("snooze_until")(_utc)

    @model_validator(mode="after")
    def _check(self) -> ConversationPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of status, assignee_id, snooze_until")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status may not be null")
        if self.status == "snoozed" and self.snooze_until is None:
            raise ValueError("snoozing needs snooze_until")
        return self


class ReplyIn(Schema):
    """A free-form `text`, or a template (`template_id`, `variables`)."""

    text: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE)
    template_id: int | None = Field(default=None, ge=1, le=2**62)
    variables: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _source(self) -> ReplyIn:
        if (self.text is None) == (self.template_id is None):
            raise ValueError("give either text or template_id")
        if "\x00" in (self.text or ""):
            raise ValueError("text may not contain NUL characters")
        return self


class ConversationOut(Out):
    id: int
    contact_id: int
    channel: str
    status: str
    assignee_id: int | None
    snooze_until: dt.datetime | None
    unread: int = Field(description="inbound messages the caller has not read")
    last_message_at: dt.datetime
    created_at: dt.datetime


class AttachmentOut(Out):
    name: str
    content_type: str
    size: int | None
    url: str | None
    provider_media_id: str | None


class InboundOut(Out):
    id: int
    conversation_id: int
    direction: Literal["inbound"]
    from_: str = Field(alias="from")
    to: str
    subject: str
    text: str = Field(description="for display: the quoted history of an email reply is cut off")
    full_text: str
    html: str | None
    attachments: list[AttachmentOut]
    provider_message_id: str
    meta: dict[str, Any]
    received_at: dt.datetime

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class OutboundOut(MessageOut):
    conversation_id: int
    direction: Literal["outbound"]
    from_: str | None = Field(alias="from")

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class ConversationDetail(ConversationOut):
    messages: list[InboundOut | OutboundOut] = Field(description="both directions, oldest first")

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, model_validator

from server.api import Out, Schema

Channel = Literal["email", "sms", "whatsapp", "chat"]
Category = Literal["transactional", "marketing"]  # server.consent.models.Category
MAX_SOURCE = 100_000  # characters of template source


class TemplateIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    subject: str = Field(default="", max_length=1000)
    body: str = Field(min_length=1, max_length=MAX_SOURCE)
    category: Category = Field(
        default="transactional",
        description="marketing email must place {{ unsubscribe_url }} in its body (DESIGN §9)",
    )


class TemplatePatch(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Channel | None = None
    subject: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE)
    category: Category | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> TemplatePatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class TemplateOut(Out):
    id: int
    name: str
    channel: str
    subject: str
    body: str
    category: str
    created_at: dt.datetime
    updated_at: dt.datetime


class PreviewIn(Schema):
    contact_id: int | None = Field(default=None, ge=1)
    variables: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(Out):
    subject: str
    body: str

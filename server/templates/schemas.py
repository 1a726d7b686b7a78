from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from server.api import Out, Schema

Channel = Literal["email", "sms", "whatsapp", "chat"]
Category = Literal["transactional", "marketing"]  # server.consent.models.Category
MAX_SOURCE = 100_000  # characters of template source
MAX_PARAMETER_SOURCE = 1000  # characters of one WhatsApp parameter's source (Meta's body is 1,024)


MAX_BUTTONS = 10  # Meta: at most ten buttons on a template, indexed 0-9


class WhatsAppHeader(Schema):
    """The approved template's header: its one text parameter, or the link of its media."""

    type: Literal["text", "image", "document", "video"] = Field(
        description="`text` for a text header with one parameter {{1}}; else the media header's kind"
    )
    parameter: str = Field(
        min_length=1,
        max_length=MAX_PARAMETER_SOURCE,
        description="a template rendered like the body: the header's text, or the media's http(s) link",
    )


class WhatsAppButton(Schema):
    """A button of the approved template that takes a parameter."""

    sub_type: Literal["quick_reply", "url"] = Field(
        description="`quick_reply`: the parameter is the payload sent back when it is tapped;"
        " `url`: it is the suffix appended to the button's URL"
    )
    index: int = Field(ge=0, le=MAX_BUTTONS - 1, description="the button's position in the template, 0-9")
    parameter: str = Field(
        min_length=1, max_length=MAX_PARAMETER_SOURCE, description="a template rendered like the body"
    )


class WhatsAppTemplate(Schema):
    """The approved WhatsApp template a `whatsapp` template is sent as (server/templates/whatsapp.py)."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$", description="the template's name in WhatsApp Manager")
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", description="its language code: en, en_US")
    parameters: list[Annotated[str, Field(min_length=1, max_length=MAX_PARAMETER_SOURCE)]] = Field(
        default_factory=list,
        max_length=20,
        description="body parameters {{1}}, {{2}}, … in order, each a template rendered like the body",
    )
    header: WhatsAppHeader | None = Field(default=None, description="the header's parameter, if it has one")
    buttons: list[WhatsAppButton] = Field(
        default_factory=list, max_length=MAX_BUTTONS, description="the buttons that take a parameter"
    )

    @field_validator("buttons")
    @classmethod
    def _one_per_button(cls, buttons: list[WhatsAppButton]) -> list[WhatsAppButton]:
        seen: set[int] = set()
        for b in buttons:
            if b.index in seen:
                raise ValueError(f"index {b.index} is given twice (one parameter per button)")
            seen.add(b.index)
        return buttons

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Stored and answered as given: no `header: null` or `buttons: []` when there are none.
        out: dict[str, Any] = handler(self)
        if out.get("header") is None:
            out.pop("header", None)
        if not out.get("buttons"):
            out.pop("buttons", None)
        return out


class TemplateIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    subject: str = Field(default="", max_length=1000)
    body: str = Field(min_length=1, max_length=MAX_SOURCE)
    category: Category = Field(
        default="transactional",
        description="marketing email must place {{ unsubscribe_url }} in its body (DESIGN §9)",
    )
    whatsapp: WhatsAppTemplate | None = Field(
        default=None, description="whatsapp channel only: send as this approved template"
    )


class TemplatePatch(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Channel | None = None
    subject: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE)
    category: Category | None = None
    whatsapp: WhatsAppTemplate | None = Field(default=None, description="null removes it")

    @model_validator(mode="after")
    def _not_empty(self) -> TemplatePatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in self.model_fields_set - {"whatsapp"}:
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
    whatsapp: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class PreviewIn(Schema):
    contact_id: int | None = Field(default=None, ge=1)
    variables: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(Out):
    subject: str
    body: str

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from server.api import Out, Schema

Channel = Literal["email", "sms", "whatsapp", "chat"]
Category = Literal["transactional", "marketing"]  # server.consent.models.Category
MAX_SOURCE = 100_000  # characters of template source
MAX_PARAMETER_SOURCE = 1000  # characters of one WhatsApp parameter's source (Meta's body is 1,024)


MAX_BUTTONS = 10  # Meta: at most ten buttons on a template, indexed 0-9


MAX_FILENAME_SOURCE = 240  # characters of a document header's file name source


class WhatsAppHeader(Schema):
    """The approved template's header: its one text parameter, or its media (link or uploaded id)."""

    type: Literal["text", "image", "document", "video"] = Field(
        description="`text` for a text header with one parameter {{1}}; else the media header's kind"
    )
    parameter: str = Field(
        min_length=1,
        max_length=MAX_PARAMETER_SOURCE,
        description="a template rendered like the body: the header's text, or the media's http(s) link"
        " (its media id with `source: id`)",
    )
    source: Literal["link", "id"] = Field(
        default="link",
        description="a media header: `link`, the URL Meta fetches the media from, or `id`, the id"
        " (digits) Meta's media upload answered (Cloud API)",
    )
    filename: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FILENAME_SOURCE,
        description="a document header: the file name WhatsApp shows, a template rendered like the body",
    )

    @field_validator("source")
    @classmethod
    def _media_only(cls, source: str, info: ValidationInfo) -> str:
        if source != "link" and info.data.get("type") == "text":
            raise ValueError("only a media header (image, document, video) has a source")
        return source

    @field_validator("filename")
    @classmethod
    def _document_only(cls, filename: str | None, info: ValidationInfo) -> str | None:
        if filename is not None and info.data.get("type") != "document":
            raise ValueError("only a document header has a file name")
        return filename


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
    """The approved WhatsApp template a `whatsapp` template is sent as (server/templates/whatsapp.py):
    by `name` and `language` through the Cloud API, by `content_sid` through Twilio, or both."""

    name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,512}$",
        description="the template's name in WhatsApp Manager (Cloud API)",
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$",
        validate_default=True,
        description="its language code: en, en_US (with `name`)",
    )
    content_sid: str | None = Field(
        default=None,
        pattern=r"^HX[0-9a-fA-F]{32}$",
        validate_default=True,
        description="the Twilio Content API template's SID, HX + 32 hex digits (WhatsApp through"
        " Twilio); its variables {{1}}, {{2}}, … are `parameters` in order",
    )
    parameters: list[Annotated[str, Field(min_length=1, max_length=MAX_PARAMETER_SOURCE)]] = Field(
        default_factory=list,
        max_length=20,
        description="body parameters {{1}}, {{2}}, … in order, each a template rendered like the body",
    )
    header: WhatsAppHeader | None = Field(default=None, description="the header's parameter, if it has one")
    buttons: list[WhatsAppButton] = Field(
        default_factory=list, max_length=MAX_BUTTONS, description="the buttons that take a parameter"
    )

    @field_validator("language")
    @classmethod
    def _with_name(cls, language: str | None, info: ValidationInfo) -> str | None:
        # `name` is missing from `info.data` when it failed its own check: no second error then.
        if "name" in info.data and (language is None) != (info.data["name"] is None):
            raise ValueError("name and language go together (the Cloud API sends a template by both)")
        return language

    @field_validator("content_sid")
    @classmethod
    def _some_way(cls, content_sid: str | None, info: ValidationInfo) -> str | None:
        if content_sid is None and "name" in info.data and info.data["name"] is None:
            raise ValueError(
                "give name and language (Cloud API), content_sid (Twilio), or both: how it is sent"
            )
        return content_sid

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
        for key in ("name", "language", "content_sid", "header"):
            if out.get(key) is None:
                out.pop(key, None)
        if header := out.get("header"):
            if header.get("source") == "link":
                header.pop("source")
            if header.get("filename") is None:
                header.pop("filename", None)
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

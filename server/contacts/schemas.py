from __future__ import annotations

import datetime as dt
from typing import Any, cast

from pydantic import Field, field_validator, model_validator
from sqlalchemy import String

from server.api import Out, Query, Schema
from server.consent.localtime import TIMEZONE_ATTRIBUTE, zone
from server.contacts.models import Audit
from server.pagination import PAGE_LIMIT, PageLimit
from server.validators import normalize_email, normalize_phone

MAX_TAGS = 50


def normalize_tags(tags: list[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        t = tag.strip()
        if not t:
            raise ValueError("tags must not be empty")
        if len(t) > 64:
            raise ValueError("a tag is at most 64 characters")
        if t not in out:
            out.append(t)
    if len(out) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return out


# An attribute change is audited as the field `attributes.<key>`: the key fits in what is left.
_AUDIT_PREFIX = "attributes."
MAX_ATTRIBUTE_KEY = (cast(String, Audit.__table__.c.field.type).length or 100) - len(_AUDIT_PREFIX)


def check_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    for key in attrs:
        if not key or len(key) > MAX_ATTRIBUTE_KEY:
            shown = key if len(key) <= 40 else key[:40] + "…"
            raise ValueError(f"attribute name {shown!r} must be 1 to {MAX_ATTRIBUTE_KEY} characters")
    if (tz := attrs.get(TIMEZONE_ATTRIBUTE)) is not None:  # None: a patch removing it
        zone(tz)  # quiet hours and local-time campaigns read it (server/consent/localtime.py)
    return attrs


class ContactIn(Schema):
    name: str = Field(default="", max_length=300)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return normalize_email(v) if v else None

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        return normalize_phone(v) if v else None

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return normalize_tags(v)

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_attributes(v)


class ContactPatch(Schema):
    """Fields to change. `attributes` is merged key by key (a null value removes the key)."""

    name: str | None = Field(default=None, max_length=300)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    attributes: dict[str, Any] | None = None
    tags: list[str] | None = None

    _validate_email = field_validator("email")(ContactIn._email.__func__)  # type: ignore[attr-defined]
    _validate_phone = field_validator("phone")(ContactIn._phone.__func__)  # type: ignore[attr-defined]

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            raise ValueError("tags must be a list (use [] to clear)")
        return normalize_tags(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str:
        if v is None:
            raise ValueError("name must be a string")
        return v

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, v: dict[str, Any] | None) -> dict[str, Any]:
        if v is None:
            raise ValueError("attributes must be an object")
        return check_attributes(v)

    @model_validator(mode="after")
    def _not_empty(self) -> ContactPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self

    def changes(self) -> dict[str, Any]:
        """Flat field → value, with attributes as `attributes.<key>`."""
        out: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name == "attributes":
                for key, v in (value or {}).items():
                    out[f"attributes.{key}"] = v
            else:
                out[name] = value
        return out


class ContactOut(Out):
    id: int
    name: str
    email: str | None
    phone: str | None
    attributes: dict[str, Any]
    tags: list[str]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ContactQuery(Query):
    q: str | None = Field(
        default=None,
        max_length=200,
        description="Case-insensitive: a substring of the name, email, phone or an extra identity; under"
        " three characters a prefix (of the name or a word in it, the email, the phone with its + optional)",
    )
    tag: str | None = Field(default=None, max_length=64)
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)


class HistoryItem(Out):
    field: str
    old: Any
    new: Any
    user_id: int | None
    api_key_id: int | None = None  # the API key that made the change (then user_id is null)
    version: int
    at: dt.datetime


class History(Out):
    items: list[HistoryItem]
    next_cursor: str | None = None


class Conflict(Out):
    field: str
    yours: Any
    theirs: Any

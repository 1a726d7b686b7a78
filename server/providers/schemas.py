from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, field_validator, model_validator

from server.api import Out, Schema
from server.providers.adapters import ADAPTERS
from server.templates.schemas import Channel

MAX_SEND_RATE = 100_000.0  # messages per second


def _known_kind(kind: str) -> str:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown provider kind; one of: {', '.join(sorted(ADAPTERS))}")
    return kind


class ProviderIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    kind: str
    channel: Channel
    priority: int = Field(default=100, ge=0, le=1_000_000)
    config: dict[str, Any] = Field(default_factory=dict)
    send_rate: float | None = Field(default=None, gt=0, le=MAX_SEND_RATE)
    enabled: bool = True

    _kind = field_validator("kind")(_known_kind)


class ProviderPatch(Schema):
    """Fields to change. `config` is merged key by key into the stored one: secrets not sent are
    kept, and a null value removes a key. `send_rate: null` removes the limit."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Channel | None = None
    priority: int | None = Field(default=None, ge=0, le=1_000_000)
    config: dict[str, Any] | None = None
    send_rate: float | None = Field(default=None, gt=0, le=MAX_SEND_RATE)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> ProviderPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in self.model_fields_set - {"send_rate"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class ProviderOut(Out):
    """A provider connection as the API shows it: `config` without its secrets; `secrets_set`
    names the secret keys that hold a value."""

    id: int
    name: str
    kind: str
    channel: str
    priority: int
    config: dict[str, Any]
    secrets_set: list[str]
    send_rate: float | None
    enabled: bool
    webhook_url: str
    inbound_url: str | None = Field(
        default=None,
        description="where the provider posts customers' messages (DESIGN §8); SendGrid's carries"
        " `?token=`, shown only in the answer that creates the connection",
    )
    created_at: dt.datetime
    updated_at: dt.datetime

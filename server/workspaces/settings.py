"""Workspace settings (`workspace.settings`, a JSON document): quiet hours, the default time zone
and the texts Switchboard answers SMS/WhatsApp keywords with (DESIGN §9).

Stored as given by `PUT /api/v1/workspace/settings` (validated); read through `WorkspaceSettings`,
which fills in defaults for keys that are absent, so a workspace made before a key existed reads
the default."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.api import Out, Schema
from server.consent.localtime import DAYS, QuietHours, clock, zone
from server.workspaces.models import Workspace

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DEFAULT_HELP = "Reply STOP to unsubscribe, START to subscribe again."
DEFAULT_OPT_OUT = "You are unsubscribed and will receive no more messages. Reply START to subscribe again."
DEFAULT_OPT_IN = "You are subscribed again. Reply STOP to unsubscribe."
MAX_REPLY = 640  # four SMS segments


class QuietHoursIn(Schema):
    """`start` to `end` on the contact's clock; `days`: the weekdays a window starts on (all when empty)."""

    start: str
    end: str
    days: list[Day] = Field(default_factory=list, max_length=7)

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: str) -> str:
        clock(v)
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[Day]) -> list[Day]:
        return sorted(set(v), key=DAYS.index)


class WorkspaceSettings(Schema):
    quiet_hours: QuietHoursIn | None = None
    timezone: str = "UTC"  # contacts with no zone attribute and a phone we cannot place
    help_text: str = Field(default=DEFAULT_HELP, min_length=1, max_length=MAX_REPLY)
    opt_out_reply: str = Field(default=DEFAULT_OPT_OUT, max_length=MAX_REPLY)  # "": no reply
    opt_in_reply: str = Field(default=DEFAULT_OPT_IN, max_length=MAX_REPLY)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        zone(v)
        return v

    def quiet(self) -> QuietHours | None:
        return QuietHours.of(self.quiet_hours.model_dump()) if self.quiet_hours is not None else None


class WorkspaceSettingsOut(Out):
    quiet_hours: dict[str, Any] | None
    timezone: str
    help_text: str
    opt_out_reply: str
    opt_in_reply: str


def parse(raw: dict[str, Any] | None) -> WorkspaceSettings:
    """The stored document with defaults; a stored value that no longer validates reads as default."""
    try:
        return WorkspaceSettings.model_validate(raw or {})
    except ValueError:
        return WorkspaceSettings()


async def get(session: AsyncSession, workspace_id: int) -> WorkspaceSettings:
    raw = (await session.execute(select(Workspace.settings).where(Workspace.id == workspace_id))).scalar()
    return parse(raw)


async def get_many(session: AsyncSession, workspace_ids: Iterable[int]) -> dict[int, WorkspaceSettings]:
    """Several workspaces' settings in one query (the dispatcher asks once per claimed batch)."""
    ids = set(workspace_ids)
    if not ids:
        return {}
    rows = await session.execute(select(Workspace.id, Workspace.settings).where(Workspace.id.in_(ids)))
    return {wid: parse(raw) for wid, raw in rows.all()}


async def put(session: AsyncSession, workspace_id: int, value: WorkspaceSettings) -> WorkspaceSettings:
    ws = await session.get(Workspace, workspace_id, with_for_update=True)
    assert ws is not None  # the caller's principal belongs to it
    ws.settings = value.model_dump(mode="json")
    await session.flush()
    return value

"""`GET /api/v1/reports/daily` (viewer+) and the on-demand recompute (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator
from starlette.responses import Response

from server.api import Ctx, Out, Router, Schema, json_response
from server.db import utcnow
from server.reports import job, service
from server.reports.days import check_day

router = Router(tag="reports")

DEFAULT_DAYS = 30
MAX_DAYS = 366


class RangeQuery(Schema):
    """`from`/`to` (inclusive, UTC days); a missing end defaults around today."""

    default_days: ClassVar[int] = 30

    from_: dt.date | None = Field(default=None, alias="from")
    to: dt.date | None = None

    @field_validator("from_", "to")
    @classmethod
    def _within_window(cls, v: dt.date | None) -> dt.date | None:
        return None if v is None else check_day(v)

    @model_validator(mode="after")
    def _range(self) -> RangeQuery:
        first, last = self.bounds()
        if first > last:
            raise ValueError("`from` must not be after `to`")
        if (last - first).days + 1 > MAX_DAYS:
            raise ValueError(f"at most {MAX_DAYS} days per request")
        return self

    def bounds(self) -> tuple[dt.date, dt.date]:
        span = dt.timedelta(days=self.default_days - 1)
        if self.to is not None:
            return self.from_ or self.to - span, self.to
        if self.from_ is not None:
            return self.from_, max(self.from_, min(self.from_ + span, utcnow().date()))
        today = utcnow().date()
        return today - span, today


class RecomputeIn(RangeQuery):
    default_days: ClassVar[int] = 2  # yesterday and today


class DayRow(Out):
    day: dt.date
    channel: str
    sent: int
    delivered: int
    bounced: int
    failed: int


class DailyOut(Out):
    from_: dt.date = Field(serialization_alias="from")
    to: dt.date
    items: list[DayRow]


async def _answer(ctx: Ctx[Any], first: dt.date, last: dt.date, *, fresh: bool = False) -> Response:
    """`fresh`: read the primary (right after writing); else the read replica when there is one."""
    async with (ctx.db if fresh else ctx.reads).transaction() as s:
        rows = await service.read(s, workspace_id=ctx.workspace_id, first=first, last=last)
    out = DailyOut(from_=first, to=last, items=[DayRow.model_validate(r) for r in rows])
    return json_response(out.model_dump(mode="json", by_alias=True))


@router.op("GET", "/reports/daily", query=RangeQuery, response=DailyOut)
async def daily(ctx: Ctx[None]) -> Response:
    """Per day and channel: messages sent, delivered, bounced and failed (UTC days, oldest first)."""
    first, last = ctx.query.bounds()
    return await _answer(ctx, first, last)


@router.op("POST", "/reports/recompute", body=RecomputeIn, response=DailyOut, role="admin")
async def recompute(ctx: Ctx[RecomputeIn]) -> Response:
    """Recompute this workspace's daily figures now (default: yesterday and today) and return them."""
    first, last = ctx.body.bounds()
    await job.run_once(ctx.db, first=first, last=last, workspace_id=ctx.workspace_id)
    return await _answer(ctx, first, last, fresh=True)

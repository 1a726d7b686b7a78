"""Daily per-channel counts (sent, delivered, bounced, failed), computed from the message history.

A count is the number of distinct messages that reached that status on that UTC day
(`message_event` rows written by every status change), so a message sent on Monday and
delivered on Tuesday counts as sent on Monday and delivered on Tuesday."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import dialect_of, utcnow
from server.events.service import emit
from server.messages.models import Message, MessageEvent
from server.reports.models import DailyReport

COUNTED = ("sent", "delivered", "bounced", "failed")
Counts = dict[str, int]
Key = tuple[int, dt.date, str]  # (workspace id, day, channel)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return start, start + dt.timedelta(days=1)


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


async def count_day(
    session: AsyncSession, day: dt.date, *, workspace_id: int | None = None
) -> dict[Key, Counts]:
    """Counts of one UTC day from the history, for one workspace or all of them."""
    start, end = day_bounds(day)
    cond = and_(
        MessageEvent.at >= start,
        MessageEvent.at < end,
        MessageEvent.status.in_(COUNTED),
        MessageEvent.message_id.is_not(None),
    )
    if workspace_id is not None:
        cond = and_(cond, MessageEvent.workspace_id == workspace_id)
    rows = await session.execute(
        select(
            MessageEvent.workspace_id,
            Message.channel,
            MessageEvent.status,
            func.count(distinct(MessageEvent.message_id)),
        )
        .join(Message, Message.id == MessageEvent.message_id)
        .where(cond)
        .group_by(MessageEvent.workspace_id, Message.channel, MessageEvent.status)
    )
    out: dict[Key, Counts] = {}
    for ws, channel, status, n in rows:
        out.setdefault((ws, day, channel), dict.fromkeys(COUNTED, 0))[status] = int(n)
    return out


def _upsert(session: AsyncSession, rows: list[dict[str, Any]]) -> Any:
    if dialect_of(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(DailyReport).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=["workspace_id", "day", "channel"],
        set_={k: stmt.excluded[k] for k in (*COUNTED, "updated_at")},
    )


async def recompute(
    session: AsyncSession, *, first: dt.date, last: dt.date, workspace_id: int | None = None
) -> dict[int, list[dict[str, Any]]]:
    """Rebuild the rows of days `first`..`last` (inclusive). For every workspace whose figures
    changed, emits one `report.updated` event listing its changed rows; returns those rows."""
    before_cond = and_(DailyReport.day >= first, DailyReport.day <= last)
    if workspace_id is not None:
        before_cond = and_(before_cond, DailyReport.workspace_id == workspace_id)
    before: dict[Key, Counts] = {
        (r.workspace_id, r.day, r.channel): {k: getattr(r, k) for k in COUNTED}
        for r in (await session.execute(select(DailyReport).where(before_cond))).scalars()
    }
    after: dict[Key, Counts] = {}
    for day in days(first, last):
        after.update(await count_day(session, day, workspace_id=workspace_id))
    # Rows that had figures but now have none (history pruned or messages deleted) go to zero.
    for key in before.keys() - after.keys():
        after[key] = dict.fromkeys(COUNTED, 0)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    if not changed:
        return {}
    now = utcnow()
    await session.execute(
        _upsert(
            session,
            [
                {"workspace_id": ws, "day": day, "channel": ch, **counts, "updated_at": now}
                for (ws, day, ch), counts in sorted(changed.items())
            ],
        )
    )
    by_ws: dict[int, list[dict[str, Any]]] = {}
    for (ws, day, ch), counts in sorted(changed.items()):
        by_ws.setdefault(ws, []).append({"day": day.isoformat(), "channel": ch, **counts})
    for ws, rows in by_ws.items():
        await emit(session, ws, "report.updated", {"rows": rows})
    return by_ws


async def read(
    session: AsyncSession, *, workspace_id: int, first: dt.date, last: dt.date
) -> list[DailyReport]:
    rows = await session.execute(
        select(DailyReport)
        .where(DailyReport.workspace_id == workspace_id, DailyReport.day >= first, DailyReport.day <= last)
        .order_by(DailyReport.day, DailyReport.channel)
    )
    return list(rows.scalars())

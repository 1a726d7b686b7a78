"""The suppression list (DESIGN §9): addresses never sent to, whatever the category.

Bounces and spam reports add rows from webhooks (server/webhooks/service.py); agents add manual
ones here, and admins lift a row recorded by mistake. The dispatcher's Bloom filter
(server/messages/suppression.py) needs no message about a lift: a Bloom hit is only a maybe that
the table decides, so a lifted address is sendable at once, and the periodic rebuild drops it
from the filter."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import utcnow
from server.errors import NotFound
from server.events.service import emit
from server.messages.models import Suppression
from server.messages.suppression import normalize
from server.validators import normalize_email, normalize_phone

REASONS = ("bounce", "unsubscribe", "spam", "manual")


class SuppressionNotFound(NotFound):
    what = "suppression"


class AlreadySuppressed(Exception):
    pass


def normalize_address(raw: str) -> str:
    """As stored: a lower-cased email, or an E.164 phone (`ValueError` when it is neither)."""
    raw = raw.strip()
    if "@" in raw:
        return normalize(normalize_email(raw))
    return normalize_phone(raw)


def as_dict(row: Suppression) -> dict[str, Any]:
    return {
        "id": row.id,
        "address": row.address,
        "reason": row.reason,
        "note": row.note,
        "created_by": row.created_by,
        "created_at": row.created_at,
    }


async def list_suppressions(
    session: AsyncSession,
    *,
    workspace_id: int,
    q: str | None,
    reason: str | None,
    before_id: int | None,
    limit: int,
) -> list[Suppression]:
    """Newest first; `q` matches part of the address."""
    stmt = select(Suppression).where(Suppression.workspace_id == workspace_id)
    if q:
        escaped = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Suppression.address.like(f"%{escaped}%", escape="\\"))
    if reason:
        stmt = stmt.where(Suppression.reason == reason)
    if before_id is not None:
        stmt = stmt.where(Suppression.id < before_id)
    return list((await session.execute(stmt.order_by(Suppression.id.desc()).limit(limit))).scalars())


async def add_suppression(
    session: AsyncSession,
    *,
    workspace_id: int,
    address: str,
    reason: str,
    note: str | None,
    user_id: int | None,
) -> Suppression:
    """`AlreadySuppressed` when the address is on the list (whatever the reason)."""
    row = Suppression(
        workspace_id=workspace_id,
        address=address,
        reason=reason,
        note=note,
        created_by=user_id,
        created_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise AlreadySuppressed() from None
    await emit(
        session,
        workspace_id,
        "suppression.created",
        {"suppression_id": row.id, "address": row.address, "reason": row.reason, "by": user_id},
    )
    return row


async def lift_suppression(session: AsyncSession, *, workspace_id: int, suppression_id: int) -> Suppression:
    """Take an address off the list (`SuppressionNotFound`); returns the row as it was."""
    row = (
        await session.execute(
            select(Suppression)
            .where(Suppression.id == suppression_id, Suppression.workspace_id == workspace_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        raise SuppressionNotFound(suppression_id)
    await session.delete(row)
    await session.flush()
    return row

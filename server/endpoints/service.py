"""Outgoing webhook endpoints and their delivery log.

The second half holds the deliverer's SQL (taking events from the log, claiming the head
delivery of an endpoint, recording an attempt) so the queue's rules read in one place:

* An endpoint's deliveries go out in id order, one at a time: only its *head* (lowest pending
  id) is ever attempted, so a failing head holds back the later deliveries of that endpoint —
  and of no other endpoint. We chose strict order over throughput because receivers apply
  `contact.updated` and `message.status` events in sequence; a head that keeps failing ends by
  giving up (24 h) or by disabling the endpoint, so the wait is bounded.
* A claim is a lease written into `next_attempt_at` by one conditional UPDATE; a process that dies
  mid-attempt leaves a lease that expires, and the delivery is tried again (at least once).
* Lock order is endpoint row, then delivery rows, everywhere, so no two writers deadlock.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import utcnow
from server.endpoints.models import Delivery, Endpoint
from server.endpoints.schemas import ALL_EVENTS, EVENT_TYPES
from server.errors import NotFound
from server.events.service import envelope, read_after
from server.workspaces.models import Workspace

SECRET_OVERLAP = dt.timedelta(hours=24)  # how long the old secret keeps signing after a rotation


class EndpointNotFound(NotFound):
    what = "endpoint"


class DeliveryNotFound(NotFound):
    what = "delivery"


class ResendRefused(Exception):
    pass


def new_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def wants(endpoint_events: list[str], event_type: str) -> bool:
    if event_type not in EVENT_TYPES:
        return False
    return ALL_EVENTS in endpoint_events or event_type in endpoint_events


# --- The API's operations -------------------------------------------------------------------


async def create_endpoint(
    session: AsyncSession, *, workspace_id: int, url: str, events: list[str], description: str
) -> Endpoint:
    """A new endpoint receives the events committed from now on, not the backlog."""
    seq = (
        await session.execute(select(Workspace.event_seq).where(Workspace.id == workspace_id))
    ).scalar_one()
    endpoint = Endpoint(
        workspace_id=workspace_id,
        url=url,
        events=events,
        description=description,
        secret=new_secret(),
        enabled=True,
        consecutive_failures=0,
        cursor=int(seq),
        created_at=utcnow(),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def get_endpoint(
    session: AsyncSession, *, workspace_id: int, endpoint_id: int, for_update: bool = False
) -> Endpoint:
    stmt = select(Endpoint).where(Endpoint.id == endpoint_id, Endpoint.workspace_id == workspace_id)
    if for_update:
        stmt = stmt.with_for_update()
    endpoint = (await session.execute(stmt)).scalar_one_or_none()
    if endpoint is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint


async def list_endpoints(
    session: AsyncSession, *, workspace_id: int, before_id: int | None, limit: int
) -> list[Endpoint]:
    stmt = select(Endpoint).where(Endpoint.workspace_id == workspace_id)
    if before_id is not None:
        stmt = stmt.where(Endpoint.id < before_id)
    return list((await session.execute(stmt.order_by(Endpoint.id.desc()).limit(limit))).scalars())


async def patch_endpoint(
    session: AsyncSession, *, workspace_id: int, endpoint_id: int, changes: dict[str, Any]
) -> Endpoint:
    endpoint = await get_endpoint(
        session, workspace_id=workspace_id, endpoint_id=endpoint_id, for_update=True
    )
    for name in ("url", "events", "description"):
        if name in changes:
            setattr(endpoint, name, changes[name])
    if changes.get("enabled") is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.consecutive_failures = 0
        endpoint.disabled_reason = None
        # The head waited out its backoff while disabled: try it at once.
        await session.execute(
            update(Delivery)
            .where(Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")
            .values(next_attempt_at=utcnow())
        )
    elif changes.get("enabled") is False and endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_reason = "disabled by an admin"
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, *, workspace_id: int, endpoint_id: int) -> None:
    endpoint = await get_endpoint(
        session, workspace_id=workspace_id, endpoint_id=endpoint_id, for_update=True
    )
    await session.delete(endpoint)


async def rotate_secret(
    session: AsyncSession, *, workspace_id: int, endpoint_id: int, overlap: dt.timedelta = SECRET_OVERLAP
) -> Endpoint:
    """A new secret; the old one keeps signing (a second `v1=`) until `previous_secret_until`."""
    endpoint = await get_endpoint(
        session, workspace_id=workspace_id, endpoint_id=endpoint_id, for_update=True
    )
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = utcnow() + overlap
    endpoint.secret = new_secret()
    await session.flush()
    return endpoint


async def list_deliveries(
    session: AsyncSession,
    *,
    workspace_id: int,
    endpoint_id: int,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[Delivery]:
    await get_endpoint(session, workspace_id=workspace_id, endpoint_id=endpoint_id)
    stmt = select(Delivery).where(Delivery.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(Delivery.status == status)
    if before_id is not None:
        stmt = stmt.where(Delivery.id < before_id)
    return list((await session.execute(stmt.order_by(Delivery.id.desc()).limit(limit))).scalars())


async def get_delivery(
    session: AsyncSession, *, workspace_id: int, endpoint_id: int, delivery_id: int
) -> Delivery:
    delivery = (
        await session.execute(
            select(Delivery).where(
                Delivery.id == delivery_id,
                Delivery.endpoint_id == endpoint_id,
                Delivery.workspace_id == workspace_id,
            )
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise DeliveryNotFound(delivery_id)
    return delivery


async def resend(session: AsyncSession, *, workspace_id: int, endpoint_id: int, delivery_id: int) -> Delivery:
    """Queue the same event again as a new delivery (the old one stays in the log as it was).

    It joins the end of the endpoint's queue."""
    endpoint = await get_endpoint(
        session, workspace_id=workspace_id, endpoint_id=endpoint_id, for_update=True
    )
    old = await get_delivery(
        session, workspace_id=workspace_id, endpoint_id=endpoint_id, delivery_id=delivery_id
    )
    if old.status == "pending":
        raise ResendRefused("This delivery is still pending; it will be tried again on its own.")
    if not endpoint.enabled:
        raise ResendRefused("The endpoint is disabled; re-enable it first (PATCH enabled: true).")
    now = utcnow()
    new = Delivery(
        workspace_id=workspace_id,
        endpoint_id=endpoint_id,
        event_id=old.event_id,
        event_type=old.event_type,
        payload=old.payload,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(new)
    await session.flush()
    return new


# --- The deliverer's SQL --------------------------------------------------------------------


async def endpoints_behind(session: AsyncSession) -> list[int]:
    """Enabled endpoints whose workspace has handed out event ids past their cursor."""
    rows = await session.execute(
        select(Endpoint.id)
        .join(Workspace, Workspace.id == Endpoint.workspace_id)
        .where(Endpoint.enabled.is_(True), Endpoint.cursor < Workspace.event_seq)
        .order_by(Endpoint.id)
    )
    return [r[0] for r in rows]


async def take_events(session: AsyncSession, endpoint_id: int, *, batch: int) -> int:
    """Turn events after the endpoint's cursor into deliveries and advance the cursor, in the
    caller's transaction. Returns how many events were read (`batch` means: call again).

    Event ids follow commit order within a workspace, so no event can later appear below the cursor."""
    endpoint = (
        await session.execute(select(Endpoint).where(Endpoint.id == endpoint_id).with_for_update())
    ).scalar_one_or_none()
    if endpoint is None or not endpoint.enabled:
        return 0
    events = await read_after(session, endpoint.workspace_id, endpoint.cursor, limit=batch)
    if not events:
        return 0
    now = utcnow()
    rows = [
        {
            "workspace_id": endpoint.workspace_id,
            "endpoint_id": endpoint.id,
            "event_id": e.id,
            "event_type": e.type,
            "payload": envelope(e.id, e.type, e.ts, e.data),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for e in events
        if wants(endpoint.events, e.type)
    ]
    if rows:
        await session.execute(insert(Delivery), rows)
    endpoint.cursor = events[-1].id
    return len(events)


async def due_endpoints(session: AsyncSession, *, now: dt.datetime, limit: int) -> list[int]:
    """Enabled endpoints whose head delivery is due."""
    head = (
        select(Delivery.endpoint_id, func.min(Delivery.id).label("delivery_id"))
        .where(Delivery.status == "pending")
        .group_by(Delivery.endpoint_id)
        .subquery()
    )
    rows = await session.execute(
        select(head.c.endpoint_id)
        .join(Delivery, Delivery.id == head.c.delivery_id)
        .join(Endpoint, Endpoint.id == head.c.endpoint_id)
        .where(Endpoint.enabled.is_(True), Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed delivery with what is needed to send it, detached from any session."""

    delivery_id: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]  # current first, then the previous one during a rotation
    payload: dict[str, Any]
    attempts: int  # made before this one
    created_at: dt.datetime


async def claim_head(
    session: AsyncSession, endpoint_id: int, *, now: dt.datetime, lease_until: dt.datetime
) -> Attempt | None:
    """Claim the endpoint's head delivery if it is due; None when there is nothing to send now."""
    endpoint = (
        await session.execute(select(Endpoint).where(Endpoint.id == endpoint_id, Endpoint.enabled.is_(True)))
    ).scalar_one_or_none()
    if endpoint is None:
        return None
    head = (
        await session.execute(
            select(Delivery)
            .where(Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")
            .order_by(Delivery.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if head is None or head.next_attempt_at > now:
        return None
    claimed: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Delivery)
        .where(Delivery.id == head.id, Delivery.status == "pending", Delivery.next_attempt_at <= now)
        .values(next_attempt_at=lease_until)
    )
    if claimed.rowcount != 1:  # another process took it first
        return None
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        keys.append(endpoint.previous_secret)
    return Attempt(
        delivery_id=head.id,
        endpoint_id=endpoint_id,
        url=endpoint.url,
        secrets=tuple(keys),
        payload=head.payload,
        attempts=head.attempts,
        created_at=head.created_at,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None
    latency_ms: float | None
    error: str | None = None


async def record(
    session: AsyncSession,
    attempt: Attempt,
    outcome: Outcome,
    *,
    now: dt.datetime,
    next_attempt_at: dt.datetime | None,
    max_failures: int,
) -> str | None:
    """Write an attempt's result. On failure, `next_attempt_at` None means give up on this delivery.

    Returns the reason when this failure disabled the endpoint."""
    disabled: str | None = None
    if outcome.ok:
        await session.execute(
            update(Endpoint).where(Endpoint.id == attempt.endpoint_id).values(consecutive_failures=0)
        )
    else:
        failures = (
            await session.execute(
                update(Endpoint)
                .where(Endpoint.id == attempt.endpoint_id)
                .values(consecutive_failures=Endpoint.consecutive_failures + 1)
                .returning(Endpoint.consecutive_failures)
            )
        ).scalar_one_or_none()
        if failures is not None and failures >= max_failures:
            disabled = f"disabled after {failures} consecutive failed deliveries; last: {outcome.error}"
            res: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
                update(Endpoint)
                .where(Endpoint.id == attempt.endpoint_id, Endpoint.enabled.is_(True))
                .values(enabled=False, disabled_reason=disabled[:1000])
            )
            if res.rowcount != 1:
                disabled = None
    values: dict[str, Any] = {
        "attempts": Delivery.attempts + 1,
        "status_code": outcome.status_code,
        "latency_ms": outcome.latency_ms,
        "last_error": outcome.error,
        "updated_at": now,
    }
    if outcome.ok:
        values.update(status="succeeded", next_attempt_at=now)
    elif next_attempt_at is None:
        values.update(status="failed", next_attempt_at=now)
    else:
        values.update(status="pending", next_attempt_at=next_attempt_at)
    await session.execute(update(Delivery).where(Delivery.id == attempt.delivery_id).values(**values))
    return disabled


async def prune_deliveries(session: AsyncSession, *, before: dt.datetime) -> int:
    """Forget finished deliveries (succeeded or given up) that ended before `before`.

    A finished delivery's `next_attempt_at` is when it finished, so the status index serves this."""
    res: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        delete(Delivery).where(
            Delivery.status.in_(("succeeded", "failed")), Delivery.next_attempt_at < before
        )
    )
    return int(res.rowcount)

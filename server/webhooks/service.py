"""Applying verified provider events to messages, in the caller's transaction.

Invariants:
* each provider event is recorded once: `message_event` is unique on (provider, provider event id)
  and a repeat changes nothing;
* an event only ever reaches messages of the provider's own workspace; one naming any other
  message is kept with `message_id` NULL for inspection;
* a message's status only moves forward (`server.messages.status.Transitions`), whatever order events come in;
* a batch costs a fixed number of statements, whatever its size, and several deliveries can share
  one transaction (`apply_batch`) with each still told what its own events did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import BigInteger, String, Table, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from server.db import one_of, utcnow
from server.events.service import NewEvent, emit_many
from server.messages.models import Message, MessageEvent, Suppression
from server.messages.status import STATE_COLUMNS, MessageState, Transitions
from server.messages.status import moves_forward as moves_forward
from server.webhooks.parse import ProviderEvent

# Keeps each `IN (...)` list well under the bind-parameter limits of asyncpg and SQLite.
_IN_CHUNK = 5000
_KIND_LEN = 24  # message_event.status
_ADDRESS_LEN = 320  # suppression.address


@dataclass(slots=True)
class ApplyResult:
    received: int = 0
    recorded: int = 0  # new message_event rows
    duplicates: int = 0  # seen before (or twice in this delivery)
    unmatched: int = 0  # recorded without a message of this workspace
    status_changes: int = 0
    suppressions: int = 0  # new suppression rows


class Connection(Protocol):
    """What applying events needs of a provider connection (a `Provider` row, or a snapshot of one)."""

    @property
    def id(self) -> int: ...
    @property
    def workspace_id(self) -> int: ...
    @property
    def kind(self) -> str: ...


@dataclass(slots=True)
class Outcome:
    """What one provider's events did, by provider event id; and the events to emit for it."""

    recorded: set[str]
    unmatched: set[str]
    changes: Counter[str]  # status changes each event made
    suppressions: Counter[str]  # new suppressions each event added
    emit: list[NewEvent]

    def summarise(self, events: Sequence[ProviderEvent], claimed: set[str]) -> ApplyResult:
        """Counts for one delivery. `claimed` holds event ids already credited to an earlier delivery
        in the same batch: an event posted twice is recorded for the first and a duplicate for the other."""
        result = ApplyResult(received=len(events))
        for event in events:
            key = event.provider_event_id
            if key not in self.recorded or key in claimed:
                result.duplicates += 1
                continue
            claimed.add(key)
            result.recorded += 1
            result.unmatched += key in self.unmatched
            result.status_changes += self.changes[key]
            result.suppressions += self.suppressions[key]
        return result


def insert_for(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT that can take ON CONFLICT DO NOTHING on both supported databases."""
    dialect = conn.dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def normalise_address(address: str) -> str:
    """Suppressions hold lower-cased emails and E.164 phones."""
    address = address.strip()
    if "@" in address:
        return address.lower()
    digits = "".join(ch for ch in address if ch.isdigit())
    return "+" + digits if digits else address


_MESSAGE = cast(Table, Message.__table__)
_EVENTS = cast(Table, MessageEvent.__table__)
_SUPPRESSIONS = cast(Table, Suppression.__table__)


async def _messages(
    conn: AsyncConnection, provider: Connection, events: list[ProviderEvent]
) -> tuple[dict[int, MessageState], dict[str, MessageState]]:
    """This workspace's messages the events name, locked (in id order) until commit."""
    our_ids = sorted({e.our_message_id for e in events if e.our_message_id is not None})
    # Some providers answer a send with the id in angle brackets (Mailgun's `<…@domain>`) but name it
    # bare in their events: look for both spellings.
    bare = {_bare(e.provider_message_id) for e in events if e.provider_message_id}
    provider_ids = sorted(bare | {f"<{b}>" for b in bare})
    by_id: dict[int, MessageState] = {}
    for i in range(0, max(len(our_ids), len(provider_ids)), _IN_CHUNK):
        ours, theirs = our_ids[i : i + _IN_CHUNK], provider_ids[i : i + _IN_CHUNK]
        conditions = []
        if ours:
            conditions.append(one_of(conn.dialect.name, _MESSAGE.c.id, ours, BigInteger()))
        if theirs:
            conditions.append(one_of(conn.dialect.name, _MESSAGE.c.provider_message_id, theirs, String()))
        rows = await conn.execute(
            select(*STATE_COLUMNS)
            .where(_MESSAGE.c.workspace_id == provider.workspace_id, or_(*conditions))
            .order_by(_MESSAGE.c.id)
            .with_for_update()
        )
        for row in rows:
            by_id[row.id] = MessageState(*row)
    by_provider_id: dict[str, MessageState] = {}
    for message in by_id.values():
        if not message.provider_message_id:
            continue
        key = _bare(message.provider_message_id)
        held = by_provider_id.get(key)
        # Two messages with one provider id (two connections of one kind): prefer this connection's.
        if held is None or (held.provider_id != provider.id and message.provider_id == provider.id):
            by_provider_id[key] = message
    return by_id, by_provider_id


def _match(
    event: ProviderEvent, by_id: dict[int, MessageState], by_provider_id: dict[str, MessageState]
) -> MessageState | None:
    if event.our_message_id is not None and event.our_message_id in by_id:
        return by_id[event.our_message_id]
    if event.provider_message_id:
        return by_provider_id.get(_bare(event.provider_message_id))
    return None


def _bare(provider_message_id: str) -> str:
    return provider_message_id.strip().strip("<>")


async def apply_events(
    session: AsyncSession, *, provider: Connection, events: Sequence[ProviderEvent]
) -> ApplyResult:
    """Record a webhook delivery's events and move their messages forward, in the caller's transaction."""
    outcome = await record(session, provider=provider, events=events)
    await emit_many(session, provider.workspace_id, outcome.emit)
    return outcome.summarise(events, set())


async def apply_batch(
    session: AsyncSession,
    deliveries: Sequence[tuple[Connection, Sequence[ProviderEvent]]],
    *,
    emit_also: Mapping[int, Sequence[NewEvent]] | None = None,
) -> list[ApplyResult]:
    """Several deliveries in one transaction: one `record` per connection, one `emit_many` per
    workspace (in workspace order, taken last: that row lock is held until commit). `emit_also`:
    more events by workspace, emitted first in the same `emit_many` (the batch's inbound messages)."""
    by_provider: dict[int, tuple[Connection, list[ProviderEvent]]] = {}
    for provider, events in deliveries:
        by_provider.setdefault(provider.id, (provider, []))[1].extend(events)
    outcomes: dict[int, Outcome] = {}
    to_emit: dict[int, list[NewEvent]] = {ws: list(e) for ws, e in (emit_also or {}).items() if e}
    for provider_id, (provider, events) in by_provider.items():
        outcomes[provider_id] = await record(session, provider=provider, events=events)
        to_emit.setdefault(provider.workspace_id, []).extend(outcomes[provider_id].emit)
    for workspace_id in sorted(to_emit):
        await emit_many(session, workspace_id, to_emit[workspace_id])
    claimed: dict[int, set[str]] = {}
    return [
        outcomes[provider.id].summarise(events, claimed.setdefault(provider.id, set()))
        for provider, events in deliveries
    ]


async def record(session: AsyncSession, *, provider: Connection, events: Sequence[ProviderEvent]) -> Outcome:
    """Everything `apply_events` does but emitting: the caller emits `Outcome.emit` before commit."""
    outcome = Outcome(set(), set(), Counter(), Counter(), [])
    unique: dict[str, ProviderEvent] = {}
    for event in events:
        unique.setdefault(event.provider_event_id, event)
    fresh = list(unique.values())
    if not fresh:
        return outcome
    # Core statements on the session's connection: the ORM's bookkeeping is not needed here.
    conn = await session.connection()
    by_id, by_provider_id = await _messages(conn, provider, fresh)
    matched = {e.provider_event_id: _match(e, by_id, by_provider_id) for e in fresh}
    rows = [
        {
            "workspace_id": provider.workspace_id,
            "message_id": m.id if (m := matched[e.provider_event_id]) is not None else None,
            "status": e.kind[:_KIND_LEN],
            "provider_id": provider.id,
            "provider_event_id": e.provider_event_id,
            "reason": e.reason,
            "raw": e.raw,
            "at": e.occurred_at,
        }
        for e in fresh
    ]
    # Events seen before (a provider retry, or a concurrent delivery of the same event) conflict
    # and are skipped: only the rows this statement inserts count, and only their events act below.
    inserted = await conn.execute(
        insert_for(conn, _EVENTS)
        .on_conflict_do_nothing(index_elements=["provider_id", "provider_event_id"])
        .returning(_EVENTS.c.id, _EVENTS.c.provider_event_id),
        rows,
    )
    row_ids = {key: row_id for row_id, key in inserted.all()}
    applied = [e for e in fresh if e.provider_event_id in row_ids]
    outcome.recorded.update(row_ids)
    outcome.unmatched.update(e.provider_event_id for e in applied if matched[e.provider_event_id] is None)

    moves = Transitions(provider.workspace_id)
    # Oldest first, so a batch holding "delivered" then an older "sent" reads as it happened.
    for event in sorted(applied, key=lambda e: e.occurred_at):
        message = matched[event.provider_event_id]
        if message is None or event.status is None:
            continue
        # The provider event's row is the history row, written above.
        if moves.move(
            message,
            event.status,
            reason=event.reason,
            at=event.occurred_at,
            provider=provider.kind,
            history=False,
        ):
            outcome.changes[event.provider_event_id] += 1
    outcome.emit += await moves.write(session)

    outcome.emit += await _suppress(conn, provider, applied, matched, row_ids, outcome)
    return outcome


async def _suppress(
    conn: AsyncConnection,
    provider: Connection,
    applied: list[ProviderEvent],
    matched: dict[str, MessageState | None],
    row_ids: dict[str, int],
    outcome: Outcome,
) -> list[NewEvent]:
    """Add the addresses that hard bounced, complained or unsubscribed; returns their events.

    Unmatched events suppress too: the provider itself will refuse the address from now on."""
    wanted: dict[str, tuple[dict[str, Any], MessageState | None, str]] = {}
    for event in applied:
        if event.suppress is None:
            continue
        target = matched[event.provider_event_id]
        address = event.recipient or (target.to_address if target is not None else "")
        if not address:
            continue
        key = normalise_address(address)
        if len(key) > _ADDRESS_LEN:
            continue  # no real address is this long, and the column would refuse it
        row = {
            "workspace_id": provider.workspace_id,
            "address": key,
            "reason": event.suppress,
            "source_event_id": row_ids[event.provider_event_id],
            "created_at": utcnow(),
        }
        wanted.setdefault(key, (row, target, event.provider_event_id))
    if not wanted:
        return []
    inserted = await conn.execute(
        insert_for(conn, _SUPPRESSIONS)
        .on_conflict_do_nothing(index_elements=["workspace_id", "address"])
        .returning(_SUPPRESSIONS.c.id, _SUPPRESSIONS.c.address),
        [row for row, _, _ in wanted.values()],
    )
    events = []
    for suppression_id, address in inserted.all():
        row, message, event_key = wanted[address]
        outcome.suppressions[event_key] += 1
        contact_id = message.contact_id if message is not None else None
        events.append(
            NewEvent(
                "suppression.created",
                {
                    "suppression_id": suppression_id,
                    "address": address,
                    "reason": row["reason"],
                    "message_id": message.id if message is not None else None,
                    "contact_id": contact_id,
                    "provider": provider.kind,
                },
                contact_id,
            )
        )
    return events

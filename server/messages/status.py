"""Moving messages through the status machine, with their history and events, in the caller's transaction.

The rule is `MessageStatus.can_move_to` (DESIGN §3: forward only, never out of a terminal state).
It is applied in two shapes, both from here:

* `Transitions` — row by row in Python: moves a snapshot of each message (`MessageState`) and then
  writes every moved message, its `message_event` row and its `message.status` event in a fixed
  number of statements. Webhooks (any number of provider events) and cancel use it.
* `TRANSITIONS` / `allowed_sql()` — the same rule as a table of allowed (from, to) pairs and as a
  SQL predicate, for the dispatcher's set-based `UPDATE … RETURNING` statements
  (`server.messages.claims`), whose results are then recorded by `record_applied`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import dialect_of, utcnow
from server.events.service import NewEvent, emit_many
from server.messages import counters
from server.messages.models import Message, MessageEvent, MessageStatus

TRANSITIONS: frozenset[tuple[MessageStatus, MessageStatus]] = frozenset(
    (a, b) for a in MessageStatus for b in MessageStatus if a.can_move_to(b)
)
# Reaching these clears a stale `reason`; reaching the bad exits sets it.
_GOOD = frozenset({MessageStatus.sent, MessageStatus.delivered})
_BAD = frozenset(
    {MessageStatus.bounced, MessageStatus.failed, MessageStatus.suppressed, MessageStatus.canceled}
)


def moves_forward(current: str, new: str, *, retry: bool = False) -> bool:
    """Whether `current → new` is allowed (`TRANSITIONS`). `sending → queued` is the dispatcher's own
    retry step (`retry=True`), never a provider's or a user's to take."""
    try:
        cur, nxt = MessageStatus(current), MessageStatus(new)
    except ValueError:
        return False
    if cur is MessageStatus.sending and nxt is MessageStatus.queued and not retry:
        return False
    return (cur, nxt) in TRANSITIONS


def allowed_sql(current: str, new: str) -> str:
    """`TRANSITIONS` as a SQL predicate on two expressions (column names or binds), for set-based
    statements: `((current = 'queued' AND new IN ('sending', …)) OR …)`."""
    by_source: dict[MessageStatus, list[MessageStatus]] = {}
    for a, b in sorted(TRANSITIONS):
        by_source.setdefault(a, []).append(b)
    return (
        "("
        + " OR ".join(
            f"({current} = '{a.value}' AND {new} IN ({', '.join(repr(b.value) for b in targets)}))"
            for a, targets in by_source.items()
        )
        + ")"
    )


class _HasStatusData(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def contact_id(self) -> int | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def provider_kind(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


def event_data(m: _HasStatusData, *, provider: str | None = None) -> dict[str, Any]:
    """`data` of `message.created` / `message.status` (DESIGN §6)."""
    return {
        "message_id": m.id,
        "contact_id": m.contact_id,
        "channel": m.channel,
        "status": m.status,
        "provider": provider if provider is not None else m.provider_kind,
        "reason": m.reason,
    }


@dataclass(slots=True)
class MessageState:
    """The columns of a message that a status change reads and writes (no ORM identity map)."""

    id: int
    status: str
    contact_id: int | None
    channel: str
    to_address: str
    provider_id: int | None
    provider_kind: str | None
    provider_message_id: str | None
    sent_at: dt.datetime | None
    reason: str | None
    created_at: dt.datetime  # the counters' bucket (`server.messages.counters`)

    @classmethod
    def of(cls, m: Message) -> MessageState:
        return cls(*(getattr(m, f.name) for f in fields(cls)))


_MESSAGE = cast(Table, Message.__table__)
STATE_COLUMNS = [_MESSAGE.c[f.name] for f in fields(MessageState)]


@dataclass(slots=True)
class Transitions:
    """Status moves of one workspace's messages, applied in memory by `move` and written by `write`.

    A message may move several times (a batch of provider events); each move yields its own
    `message.status` event, and the row is written once with its final state."""

    workspace_id: int
    moved: dict[int, MessageState] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    original: dict[int, str] = field(default_factory=dict)  # status before the first move

    def move(
        self,
        m: MessageState,
        new: MessageStatus | str,
        *,
        reason: str | None = None,
        at: dt.datetime | None = None,
        provider: str | None = None,
        raw: dict[str, Any] | None = None,
        history: bool = True,
    ) -> bool:
        """Move `m` to `new` if the machine allows it; False (and nothing changes) otherwise.

        `at` is when it happened (a provider's event time; default now), `provider` the kind named
        in the event (default the message's), `history=False` when the caller has written the
        `message_event` row already (a provider event, recorded before it is applied)."""
        if not moves_forward(m.status, new):
            return False
        new = MessageStatus(new)
        at = at or utcnow()
        self.original.setdefault(m.id, m.status)
        m.status = new.value
        if new in _GOOD:
            m.reason = None
        elif new in _BAD:
            m.reason = reason
        if new is MessageStatus.sent and m.sent_at is None:
            m.sent_at = at
        self.moved[m.id] = m
        self.events.append(NewEvent("message.status", event_data(m, provider=provider), m.contact_id))
        if history:
            self.history.append(
                {
                    "workspace_id": self.workspace_id,
                    "message_id": m.id,
                    "status": new.value,
                    "provider_id": None,
                    "provider_event_id": None,
                    "reason": reason,
                    "raw": raw,
                    "at": at,
                }
            )
        return True

    async def write(self, session: AsyncSession) -> list[NewEvent]:
        """Write the moved messages, their history rows and the counters' deltas; returns the events,
        for the caller to emit (with `emit_many`, last in its transaction)."""
        if self.moved:
            await _update_messages(session, list(self.moved.values()))
            await counters.record_moves(
                session,
                (
                    (self.workspace_id, m.created_at, m.channel, self.original[m.id], m.status)
                    for m in self.moved.values()
                ),
            )
        if self.history:
            await session.execute(insert(MessageEvent), self.history)
        return self.events


# One statement for any number of messages, so it is compiled and prepared once: the new state
# arrives as arrays, unnested into rows.
_UPDATE_MESSAGES_PG = text(
    """
    UPDATE message
    SET status = changed.status, reason = changed.reason, sent_at = changed.sent_at, updated_at = :now
    FROM unnest(
        CAST(:ids AS BIGINT[]), CAST(:statuses AS VARCHAR[]), CAST(:reasons AS TEXT[]),
        CAST(:sent_ats AS TIMESTAMPTZ[])
    ) AS changed (id, status, reason, sent_at)
    WHERE message.id = changed.id
    """
)


async def _update_messages(session: AsyncSession, messages: list[MessageState]) -> None:
    """Write the messages' new state: on PostgreSQL in one statement; SQLite runs the UPDATE once
    per message (it has no arrays, and writes in-process anyway)."""
    now = utcnow()
    conn = await session.connection()
    if dialect_of(session) == "postgresql":
        await conn.execute(
            _UPDATE_MESSAGES_PG,
            {
                "now": now,
                "ids": [m.id for m in messages],
                "statuses": [m.status for m in messages],
                "reasons": [m.reason for m in messages],
                "sent_ats": [m.sent_at for m in messages],
            },
        )
        return
    await conn.execute(
        update(_MESSAGE)
        .where(_MESSAGE.c.id == bindparam("m_id"))
        .values(
            status=bindparam("m_status"),
            reason=bindparam("m_reason"),
            sent_at=bindparam("m_sent_at"),
            updated_at=now,
        ),
        [
            {"m_id": m.id, "m_status": m.status, "m_reason": m.reason, "m_sent_at": m.sent_at}
            for m in messages
        ],
    )


_PG_HISTORY = text("""
INSERT INTO message_event (workspace_id, message_id, status, reason, at)
SELECT workspace_id, message_id, status, reason, now()
FROM unnest(CAST(:workspace_ids AS bigint[]), CAST(:message_ids AS bigint[]),
            CAST(:statuses AS text[]), CAST(:reasons AS text[]))
     AS v(workspace_id, message_id, status, reason)
""")


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A status change already written to `message` by a bulk `UPDATE … RETURNING` (the dispatcher's)."""

    message_id: int
    workspace_id: int
    contact_id: int | None
    channel: str
    status: str
    provider_kind: str | None = None
    reason: str | None = None

    def event_data(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "status": self.status,
            "provider": self.provider_kind,
            "reason": self.reason,
        }


async def record_applied(session: AsyncSession, changes: list[AppliedChange]) -> None:
    """The `message_event` rows and `message.status` events of changes applied in bulk, written as
    `Transitions.write` writes them. The caller's UPDATE must only have made allowed moves. Events go out
    with one `emit_many` per workspace, in workspace order: a fixed order of row locks, so two
    dispatchers never deadlock on each other's workspaces."""
    if not changes:
        return
    if dialect_of(session) == "postgresql":
        # One statement with arrays: a tenth of the per-row cost of an executemany on a hot path.
        await session.execute(
            _PG_HISTORY,
            {
                "workspace_ids": [c.workspace_id for c in changes],
                "message_ids": [c.message_id for c in changes],
                "statuses": [c.status for c in changes],
                "reasons": [c.reason for c in changes],
            },
        )
    else:
        now = utcnow()
        await session.execute(
            insert(MessageEvent),
            [
                {
                    "workspace_id": c.workspace_id,
                    "message_id": c.message_id,
                    "status": c.status,
                    "provider_id": None,
                    "provider_event_id": None,
                    "reason": c.reason,
                    "raw": None,
                    "at": now,
                }
                for c in changes
            ],
        )
    by_workspace: dict[int, list[NewEvent]] = {}
    for c in changes:
        by_workspace.setdefault(c.workspace_id, []).append(
            NewEvent("message.status", c.event_data(), contact_id=c.contact_id)
        )
    for workspace_id in sorted(by_workspace):
        await emit_many(session, workspace_id, by_workspace[workspace_id])

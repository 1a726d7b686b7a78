"""The SQL that moves messages in and out of `sending`, in one place.

PostgreSQL: any number of workers claim with `FOR UPDATE SKIP LOCKED`, so two never take the same
row, and use the database clock. SQLite: one worker, plain `UPDATE … RETURNING` in the engine's
`BEGIN IMMEDIATE` transaction, with the process clock.

`attempts` doubles as the claim's fencing token: every claim increments it, and a result is written
only while the message is still `sending` with the same `attempts`. A worker that lost its lease (it
stalled, another took the message back) cannot overwrite the newer claim's outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Result, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from server.db import JSONType, UTCDateTime, dialect_of, utcnow
from server.messages import counters
from server.messages.models import MessageStatus
from server.messages.status import AppliedChange, allowed_sql, record_applied
from server.providers.adapters.base import clean


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message this worker now holds in `sending` until `lease_until`."""

    id: int
    workspace_id: int
    contact_id: int | None
    channel: str
    to_address: str
    subject: str
    body: str
    send_at: dt.datetime
    attempts: int  # including this claim: the fencing token
    request_id: str | None = None  # of the API request that created it: the send's log lines carry it
    from_address: str | None = None  # a conversation reply goes out from where the customer wrote to
    category: str = "transactional"  # marketing: consent is checked, email carries List-Unsubscribe
    # WhatsApp: the approved template to send, as rendered at creation (None: free-form text).
    whatsapp_template: dict[str, Any] | None = None
    via_provider_id: int | None = None  # a reply: the connection the customer wrote to sends it
    # Numbers the recipient opted out of on this channel (marketing only; set by the dispatcher's
    # consent check): no provider sending from one of them may send it.
    opted_out_at: frozenset[str] = frozenset()

    def change(self, status: MessageStatus, reason: str | None = None) -> AppliedChange:
        return AppliedChange(
            self.id, self.workspace_id, self.contact_id, self.channel, status.value, None, reason
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claim."""

    message: Claimed
    status: MessageStatus  # sent | queued (retry later) | failed | suppressed
    reason: str | None = None
    provider_id: int | None = None
    provider_kind: str | None = None
    provider_message_id: str | None = None
    next_attempt_at: dt.datetime | None = None  # when queued
    refund: bool = False  # no provider was tried: the claim does not count as an attempt
    # The provider refused because the recipient opted out of this sender (Twilio 21610): the scope
    # (sender number) to record as opted out with the outcome (server/consent/keywords.py).
    opt_out_scope: str | None = None


# Everything a provider returns is bounded before it is stored: one bad answer must not fail the
# statement that writes the whole batch. Ids are printable ASCII within `message.provider_message_id`.
PROVIDER_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,200}")
INVALID_ID_REASON = "provider returned an invalid message id"
REASON_MAX_CHARS = 1000  # a reason may join the errors of several providers, 200 characters each


def storable(o: Outcome) -> Outcome:
    """The outcome as the database accepts it. A send the provider accepted stays `sent` even when
    its id is unusable (sending again would deliver twice): stored without the id, with a reason."""
    pid, reason = o.provider_message_id, o.reason
    if pid is not None and not PROVIDER_MESSAGE_ID.fullmatch(pid):
        pid, reason = None, INVALID_ID_REASON if o.status == MessageStatus.sent else reason
    if reason is not None:
        reason = clean(reason, REASON_MAX_CHARS)
    if (pid, reason) == (o.provider_message_id, o.reason):
        return o
    return dataclasses.replace(o, provider_message_id=pid, reason=reason)


_CLAIMED_COLUMNS = (
    "id, workspace_id, contact_id, channel, to_address, subject, body, send_at, attempts, request_id,"
    " from_address, category, whatsapp_template, via_provider_id"
)
_CLAIMED_JSON = ("whatsapp_template",)
_CHANGED_COLUMNS = "id, workspace_id, contact_id, channel, status, provider_kind, reason, created_at"

PG_CLAIM = text(f"""
UPDATE message AS m
SET status = 'sending',
    lease_until = now() + make_interval(secs => :lease_s),
    attempts = m.attempts + 1,
    updated_at = now()
FROM (
    SELECT id, status FROM message
    WHERE status IN ('queued', 'scheduled') AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AS due
WHERE m.id = due.id
RETURNING {", ".join("m." + c.strip() for c in _CLAIMED_COLUMNS.split(","))}, due.status AS old_status, m.created_at
""")

# SQLite has one writer (`BEGIN IMMEDIATE`): read the due rows and their status, then take them.
SQLITE_DUE = text("""
SELECT id, status FROM message
WHERE status IN ('queued', 'scheduled') AND next_attempt_at <= :now
ORDER BY next_attempt_at
LIMIT :limit
""")

SQLITE_CLAIM = text(f"""
UPDATE message
SET status = 'sending', lease_until = :lease_until, attempts = attempts + 1, updated_at = :now
WHERE id IN :ids
RETURNING {_CLAIMED_COLUMNS}, created_at
""").bindparams(bindparam("ids", expanding=True))

# A `sending` row whose lease has passed belongs to a worker that died (or stalled): put it back in
# the queue, or fail it once it has used up its attempts (a message that kills its worker every time).
PG_RECLAIM = text(f"""
UPDATE message AS m
SET status = CASE WHEN m.attempts >= :max_attempts THEN 'failed' ELSE 'queued' END,
    reason = CASE WHEN m.attempts >= :max_attempts THEN :failed_reason ELSE :lost_reason END,
    next_attempt_at = now(),
    lease_until = NULL,
    updated_at = now()
FROM (
    SELECT id FROM message
    WHERE status = 'sending' AND lease_until < now()
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AS lost
WHERE m.id = lost.id
RETURNING {", ".join("m." + c.strip() for c in _CHANGED_COLUMNS.split(","))}
""")

SQLITE_RECLAIM = text(f"""
UPDATE message
SET status = CASE WHEN attempts >= :max_attempts THEN 'failed' ELSE 'queued' END,
    reason = CASE WHEN attempts >= :max_attempts THEN :failed_reason ELSE :lost_reason END,
    next_attempt_at = :now,
    lease_until = NULL,
    updated_at = :now
WHERE id IN (SELECT id FROM message WHERE status = 'sending' AND lease_until < :now LIMIT :limit)
RETURNING {_CHANGED_COLUMNS}
""")

# Outcomes of a whole batch in one statement, fenced by (status, attempts).
PG_FINISH = text(f"""
UPDATE message AS m
SET status = v.status,
    reason = v.reason,
    provider_id = COALESCE(v.provider_id, m.provider_id),
    provider_kind = COALESCE(v.provider_kind, m.provider_kind),
    provider_message_id = COALESCE(v.provider_message_id, m.provider_message_id),
    next_attempt_at = COALESCE(v.next_attempt_at, m.next_attempt_at),
    attempts = m.attempts - v.refund,
    lease_until = NULL,
    sent_at = CASE WHEN v.status = 'sent' THEN now() ELSE m.sent_at END,
    updated_at = now()
FROM unnest(
    CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
    CAST(:reasons AS text[]), CAST(:provider_ids AS bigint[]), CAST(:provider_kinds AS text[]),
    CAST(:provider_message_ids AS text[]), CAST(:next_attempt_ats AS timestamptz[]),
    CAST(:refunds AS integer[])
) AS v(id, attempts, status, reason, provider_id, provider_kind, provider_message_id, next_attempt_at, refund)
WHERE m.id = v.id AND m.status = 'sending' AND m.attempts = v.attempts
  AND {allowed_sql("m.status", "v.status")}
RETURNING {", ".join("m." + c.strip() for c in _CHANGED_COLUMNS.split(","))}
""")

SQLITE_FINISH = text(f"""
UPDATE message
SET status = :status,
    reason = :reason,
    provider_id = COALESCE(:provider_id, provider_id),
    provider_kind = COALESCE(:provider_kind, provider_kind),
    provider_message_id = COALESCE(:provider_message_id, provider_message_id),
    next_attempt_at = COALESCE(:next_attempt_at, next_attempt_at),
    attempts = attempts - :refund,
    lease_until = NULL,
    sent_at = CASE WHEN :status = 'sent' THEN :now ELSE sent_at END,
    updated_at = :now
WHERE id = :id AND status = 'sending' AND attempts = :attempts
  AND {allowed_sql("status", ":status")}
RETURNING {_CHANGED_COLUMNS}
""")

# A hold (quiet hours, server/consent/quiet.py) undoes a claim inside the transaction that made it:
# back to `scheduled` at `until`, the attempt refunded. `sending → scheduled` is not a move of the
# status machine (`TRANSITIONS`): nobody outside saw the `sending` (the claim's history is written
# later in the same transaction, and not for held messages), so to everyone else the message went
# from waiting to waiting-later. Only `hold` may take this step.
PG_HOLD = text(f"""
UPDATE message AS m
SET status = 'scheduled', reason = v.reason, send_at = v.until, next_attempt_at = v.until,
    attempts = m.attempts - 1, lease_until = NULL, updated_at = now()
FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:untils AS timestamptz[]),
            CAST(:reasons AS text[])) AS v(id, attempts, until, reason)
WHERE m.id = v.id AND m.status = 'sending' AND m.attempts = v.attempts
RETURNING {", ".join("m." + c.strip() for c in _CHANGED_COLUMNS.split(","))}
""")

SQLITE_HOLD = text(f"""
UPDATE message
SET status = 'scheduled', reason = :reason, send_at = :next_attempt_at, next_attempt_at = :next_attempt_at,
    attempts = attempts - 1, lease_until = NULL, updated_at = :now
WHERE id = :id AND status = 'sending' AND attempts = :attempts
RETURNING {_CHANGED_COLUMNS}
""")

NEXT_DUE = text(
    "SELECT min(next_attempt_at) AS next_due FROM message WHERE status IN ('queued', 'scheduled')"
)
PG_BACKLOG = text(
    "SELECT count(*) AS depth, min(next_attempt_at) AS oldest FROM message"
    " WHERE status IN ('queued', 'scheduled') AND next_attempt_at <= now()"
)
SQLITE_BACKLOG = text(
    "SELECT count(*) AS depth, min(next_attempt_at) AS oldest FROM message"
    " WHERE status IN ('queued', 'scheduled') AND next_attempt_at <= :now"
)

_TIME_PARAMS = ("now", "lease_until", "next_attempt_at")


def _typed(statement: TextClause, *columns: str, json: tuple[str, ...] = ()) -> TextClause:
    """Bind datetimes through `UTCDateTime` (SQLite stores naive UTC text) and read them back aware;
    read the `json` columns back as values, not text."""
    params = [bindparam(p, type_=UTCDateTime()) for p in _TIME_PARAMS if f":{p}" in statement.text]
    statement = statement.bindparams(*params) if params else statement
    types: dict[str, Any] = {c: UTCDateTime() for c in columns} | {c: JSONType for c in json}
    return statement.columns(**types) if types else statement  # type: ignore[return-value]


def _is_pg(session: AsyncSession) -> bool:
    return dialect_of(session) == "postgresql"


def _changes(rows: Result[Any]) -> tuple[list[AppliedChange], list[counters.Move]]:
    """The changes a statement made out of `sending`, and their moves for the counters."""
    changes, moves = [], []
    for r in rows:
        changes.append(
            AppliedChange(r.id, r.workspace_id, r.contact_id, r.channel, r.status, r.provider_kind, r.reason)
        )
        moves.append((r.workspace_id, r.created_at, r.channel, MessageStatus.sending.value, r.status))
    return changes, moves


async def claim_due(
    session: AsyncSession, *, limit: int, lease_s: float, record: bool = True
) -> list[Claimed]:
    """Take up to `limit` due messages into `sending`, with their `sending` history and events.

    With `record=False` the caller writes the history itself, later in the same transaction (the
    dispatcher does, so that a suppressed message goes straight from `queued` to `suppressed`)."""
    if _is_pg(session):
        result = await session.execute(
            _typed(PG_CLAIM, "send_at", "created_at", json=_CLAIMED_JSON),
            {"limit": limit, "lease_s": lease_s},
        )
        rows = [(row[:-2], row.old_status, row.created_at) for row in result]
    else:
        now = utcnow()
        due = {
            r.id: r.status for r in await session.execute(_typed(SQLITE_DUE), {"limit": limit, "now": now})
        }
        if not due:
            return []
        result = await session.execute(
            _typed(SQLITE_CLAIM, "send_at", "created_at", json=_CLAIMED_JSON),
            {"ids": list(due), "now": now, "lease_until": now + dt.timedelta(seconds=lease_s)},
        )
        rows = [(row[:-1], due[row.id], row.created_at) for row in result]
    claimed = [Claimed(*columns) for columns, _, _ in rows]
    await counters.record_moves(
        session,
        (
            (c.workspace_id, created_at, c.channel, old, MessageStatus.sending.value)
            for c, (_, old, created_at) in zip(claimed, rows, strict=True)
        ),
    )
    if record:
        await record_applied(session, [c.change(MessageStatus.sending) for c in claimed])
    return claimed


async def reclaim_expired(
    session: AsyncSession, *, max_attempts: int, limit: int = 1000
) -> list[AppliedChange]:
    """Take back `sending` messages whose lease has passed (their worker died)."""
    params = {
        "limit": limit,
        "max_attempts": max_attempts,
        "lost_reason": "worker lost while sending; retrying",
        "failed_reason": f"worker lost while sending, {max_attempts} attempts used",
    }
    if _is_pg(session):
        result = await session.execute(PG_RECLAIM, params)
    else:
        result = await session.execute(_typed(SQLITE_RECLAIM, "created_at"), {**params, "now": utcnow()})
    changes, moves = _changes(result)
    await counters.record_moves(session, moves)
    await record_applied(session, changes)
    return changes


async def finish(session: AsyncSession, outcomes: list[Outcome]) -> list[AppliedChange]:
    """Write the outcomes of claims still held (fenced); returns the changes actually made.

    Set-based for speed, but on the one status rule: both statements carry
    `server.messages.status.allowed_sql`, the SQL form of the `TRANSITIONS` table that webhooks
    and cancel apply row by row, so an outcome the machine does not allow is not written (and not
    returned, so it gets no history row or event)."""
    if not outcomes:
        return []
    outcomes = [storable(o) for o in outcomes]
    if _is_pg(session):
        result = await session.execute(
            PG_FINISH,
            {
                "ids": [o.message.id for o in outcomes],
                "attempts": [o.message.attempts for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "reasons": [o.reason for o in outcomes],
                "provider_ids": [o.provider_id for o in outcomes],
                "provider_kinds": [o.provider_kind for o in outcomes],
                "provider_message_ids": [o.provider_message_id for o in outcomes],
                "next_attempt_ats": [o.next_attempt_at for o in outcomes],
                "refunds": [int(o.refund) for o in outcomes],
            },
        )
        changes, moves = _changes(result)
    else:
        statement = _typed(SQLITE_FINISH, "created_at")
        now = utcnow()
        changes, moves = [], []
        for o in outcomes:
            result = await session.execute(
                statement,
                {
                    "id": o.message.id,
                    "attempts": o.message.attempts,
                    "status": o.status.value,
                    "reason": o.reason,
                    "provider_id": o.provider_id,
                    "provider_kind": o.provider_kind,
                    "provider_message_id": o.provider_message_id,
                    "next_attempt_at": o.next_attempt_at,
                    "refund": int(o.refund),
                    "now": now,
                },
            )
            one_change, one_move = _changes(result)
            changes += one_change
            moves += one_move
    await counters.record_moves(session, moves)
    await record_applied(session, changes)
    return changes


async def hold(session: AsyncSession, held: list[tuple[Claimed, dt.datetime, str]]) -> list[AppliedChange]:
    """Put messages just claimed in this transaction back to `scheduled` until a later time
    (message, until, reason), with their history rows and events (see `PG_HOLD`)."""
    if not held:
        return []
    if _is_pg(session):
        result = await session.execute(
            PG_HOLD,
            {
                "ids": [m.id for m, _, _ in held],
                "attempts": [m.attempts for m, _, _ in held],
                "untils": [until for _, until, _ in held],
                "reasons": [reason for _, _, reason in held],
            },
        )
        changes, moves = _changes(result)
    else:
        statement, now = _typed(SQLITE_HOLD, "created_at"), utcnow()
        changes, moves = [], []
        for m, until, reason in held:
            result = await session.execute(
                statement,
                {"id": m.id, "attempts": m.attempts, "next_attempt_at": until, "reason": reason, "now": now},
            )
            one_change, one_move = _changes(result)
            changes += one_change
            moves += one_move
    await counters.record_moves(session, moves)  # the claim counted them as `sending`
    await record_applied(session, changes)
    return changes


async def next_due(session: AsyncSession) -> dt.datetime | None:
    """When the earliest waiting message becomes due (None when nothing waits)."""
    return (await session.execute(_typed(NEXT_DUE, "next_due"))).scalar()


async def backlog(session: AsyncSession) -> tuple[int, dt.datetime | None]:
    """Messages due and not yet claimed, and the oldest one's due time (for queue depth and lag)."""
    if _is_pg(session):
        row = (await session.execute(_typed(PG_BACKLOG, "oldest"))).one()
    else:
        row = (await session.execute(_typed(SQLITE_BACKLOG, "oldest"), {"now": utcnow()})).one()
    return int(row[0]), row[1]

"""Recording consent and reading it back: one ledger for every channel (DESIGN §9).

`record` is the writer: under the contact's row lock it appends a `consent` row, moves
`consent_state` and emits `consent.changed`, all in the caller's transaction; `record_channels`
is its batch form for imports. A decision that does not change the current state (a second
one-click POST, a mail scanner replaying it, an import repeated) writes nothing: the ledger shows
each change once, with what caused it first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.models import ALL_SCOPE, Consent, ConsentCurrent, ConsentSource, ConsentState
from server.contacts.changes import get_contact
from server.db import dialect_of, one_of, utcnow
from server.events.service import NewEvent, emit_many

CHANNELS = ("email", "sms", "whatsapp", "chat")


@dataclass(frozen=True, slots=True)
class Recorded:
    current: ConsentCurrent
    changed: bool  # False: the state already was this, nothing was written


def as_dict(row: Consent | ConsentCurrent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "channel": row.channel,
        "scope": row.scope,
        "state": row.state,
        "source": row.source,
        "at": row.at,
    }
    if isinstance(row, Consent):
        out |= {"id": row.id, "actor_id": row.actor_id, "evidence": row.evidence, "note": row.note}
    return out


async def record(
    session: AsyncSession,
    *,
    workspace_id: int,
    contact_id: int,
    channel: str,
    state: ConsentState,
    source: ConsentSource,
    scope: str = ALL_SCOPE,
    actor_id: int | None = None,
    evidence: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> Recorded:
    """Record a decision (`ContactNotFound` when the contact is not in this workspace)."""
    await get_contact(session, workspace_id=workspace_id, contact_id=contact_id, for_update=True)
    current = (
        await session.execute(
            select(ConsentCurrent).where(
                ConsentCurrent.contact_id == contact_id,
                ConsentCurrent.channel == channel,
                ConsentCurrent.scope == scope,
            )
        )
    ).scalar_one_or_none()
    if current is not None and current.state == state.value:
        return Recorded(current, changed=False)
    now = utcnow()
    row = Consent(
        workspace_id=workspace_id,
        contact_id=contact_id,
        channel=channel,
        scope=scope,
        state=state.value,
        source=source.value,
        actor_id=actor_id,
        evidence=dict(evidence or {}),
        note=note,
        at=now,
    )
    session.add(row)
    await session.flush()
    if current is None:
        current = ConsentCurrent(
            workspace_id=workspace_id, contact_id=contact_id, channel=channel, scope=scope
        )
        session.add(current)
    current.state, current.source, current.consent_id, current.at = state.value, source.value, row.id, now
    await session.flush()
    await emit_many(
        session,
        workspace_id,
        [
            NewEvent(
                "consent.changed",
                {
                    "contact_id": contact_id,
                    "channel": channel,
                    "scope": scope,
                    "state": state.value,
                    "source": source.value,
                    "by": actor_id,
                },
                contact_id=contact_id,
            )
        ],
    )
    return Recorded(current, changed=True)


async def current(session: AsyncSession, *, workspace_id: int, contact_id: int) -> list[ConsentCurrent]:
    rows = await session.execute(
        select(ConsentCurrent)
        .where(ConsentCurrent.workspace_id == workspace_id, ConsentCurrent.contact_id == contact_id)
        .order_by(ConsentCurrent.channel, ConsentCurrent.scope)
    )
    return list(rows.scalars())


async def history(
    session: AsyncSession, *, workspace_id: int, contact_id: int, before_id: int | None, limit: int
) -> list[Consent]:
    """The ledger of one contact, newest first."""
    stmt = select(Consent).where(Consent.workspace_id == workspace_id, Consent.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(Consent.id < before_id)
    return list((await session.execute(stmt.order_by(Consent.id.desc()).limit(limit))).scalars())


async def opted_out_scopes(
    session: AsyncSession, keys: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], frozenset[str]]:
    """The scopes each (contact, channel) pair is opted out at, in one query (the dispatcher asks
    once per claimed batch); pairs opted out nowhere are absent. `ALL_SCOPE` among them: no
    marketing on the channel; otherwise none from those senders (`blocks`)."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = await session.execute(
        select(ConsentCurrent.contact_id, ConsentCurrent.channel, ConsentCurrent.scope).where(
            tuple_(ConsentCurrent.contact_id, ConsentCurrent.channel).in_(list(wanted)),
            ConsentCurrent.state == ConsentState.opted_out.value,
        )
    )
    out: dict[tuple[int, str], set[str]] = {}
    for contact_id, channel, scope in rows.all():
        out.setdefault((contact_id, channel), set()).add(scope)
    return {k: frozenset(v) for k, v in out.items()}


def blocks(scopes: frozenset[str], sender: str | None) -> bool:
    """Whether opt-outs at `scopes` forbid marketing sent from `sender` (None: a sender the
    provider picks, which may be any of the opted-out numbers)."""
    return bool(scopes) and (ALL_SCOPE in scopes or sender is None or sender in scopes)


# -- one word per channel: exports and imports -------------------------------------------------


def channel_state(scopes: Mapping[str, str]) -> str | None:
    """A channel's consent in one word, from its current state per scope: `opted_out` when any
    scope is (someone who wrote STOP to one of our numbers is not to be messaged by whoever reads
    an export), else `opted_in` when a decision was recorded, else None."""
    if not scopes:
        return None
    if ConsentState.opted_out.value in scopes.values():
        return ConsentState.opted_out.value
    return ConsentState.opted_in.value


async def channel_scopes(
    session: AsyncSession, *, workspace_id: int, contact_ids: Sequence[int]
) -> dict[tuple[int, str], dict[str, str]]:
    """The current state per scope of each (contact, channel) of `contact_ids`, in one query."""
    out: dict[tuple[int, str], dict[str, str]] = {}
    for contact_id, channel, scope, state, _id, _source in await _current_rows(
        session, workspace_id, contact_ids
    ):
        out.setdefault((contact_id, channel), {})[scope] = state
    return out


async def _current_rows(
    session: AsyncSession, workspace_id: int, contact_ids: Sequence[int]
) -> list[tuple[int, str, str, str, int, str]]:
    if not contact_ids:
        return []
    c = ConsentCurrent
    rows = await session.execute(
        select(c.contact_id, c.channel, c.scope, c.state, c.id, c.source).where(
            c.workspace_id == workspace_id,
            one_of(dialect_of(session), c.contact_id, sorted(set(contact_ids)), BigInteger()),
        )
    )
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows.all()]


# Opt-outs the contact made themselves: a file saying "opted_in" does not undo them (an old list
# re-imported must not re-subscribe someone who has since unsubscribed or sent STOP).
CONTACTS_OWN = frozenset(
    s.value
    for s in (
        ConsentSource.link,
        ConsentSource.list_unsubscribe_post,
        ConsentSource.keyword,
        ConsentSource.provider,
    )
)


@dataclass(frozen=True, slots=True)
class ChannelDecision:
    """`state` for the whole channel (one import row's consent column)."""

    contact_id: int
    channel: str
    state: ConsentState
    evidence: Mapping[str, Any]


async def record_channels(
    session: AsyncSession,
    *,
    workspace_id: int,
    decisions: Sequence[ChannelDecision],
    source: ConsentSource,
    actor_id: int | None,
) -> int:
    """Bring each contact's channel to the decided `channel_state`, set-wise: one read of the
    current state, one multi-row INSERT into the ledger, one into `consent_state` and one
    executemany UPDATE of it, whatever the number of decisions. Returns the ledger rows written.

    A decision the channel already has writes nothing (an import repeated adds no row). Opting out
    is recorded at `ALL_SCOPE`; opting in lifts every scope opted out by the business (an agent, the
    API, an import) but never one the contact made (`CONTACTS_OWN`: an unsubscribe link, one-click,
    a STOP keyword, the provider's opt-out), or records `ALL_SCOPE` when the channel has no decision yet. No `consent.changed` event: the
    caller (the importer) announces its batch once (`import.progress`), not once per contact.
    The caller holds the contacts' row locks (the importer: new contacts, or read FOR UPDATE), so
    no `record` for the same contact runs between the read and the writes."""
    if not decisions:
        return 0
    now = utcnow()
    known: dict[tuple[int, str], dict[str, str]] = {}
    row_ids: dict[tuple[int, str, str], int] = {}
    own: set[tuple[int, str, str]] = set()  # opted out by the contact: stays so
    for contact_id, channel, scope, state, row_id, by in await _current_rows(
        session, workspace_id, [d.contact_id for d in decisions]
    ):
        known.setdefault((contact_id, channel), {})[scope] = state
        row_ids[(contact_id, channel, scope)] = row_id
        if state == ConsentState.opted_out.value and by in CONTACTS_OWN:
            own.add((contact_id, channel, scope))
    ledger: list[dict[str, Any]] = []
    for d in decisions:
        scopes = known.setdefault((d.contact_id, d.channel), {})
        if channel_state(scopes) == d.state.value:
            continue
        if d.state is ConsentState.opted_out or not scopes:
            targets = [ALL_SCOPE]
        else:
            targets = sorted(
                s
                for s, st in scopes.items()
                if st == ConsentState.opted_out.value and (d.contact_id, d.channel, s) not in own
            )
        for scope in targets:
            scopes[scope] = d.state.value  # a later decision for the same channel sees this one
            ledger.append(
                {
                    "workspace_id": workspace_id,
                    "contact_id": d.contact_id,
                    "channel": d.channel,
                    "scope": scope,
                    "state": d.state.value,
                    "source": source.value,
                    "actor_id": actor_id,
                    "evidence": dict(d.evidence),
                    "note": None,
                    "at": now,
                }
            )
    if not ledger:
        return 0
    ids = (
        await session.execute(insert(Consent).returning(Consent.id, sort_by_parameter_order=True), ledger)
    ).scalars()
    newest = {  # per contact x channel x scope, the last ledger row written
        (row["contact_id"], row["channel"], row["scope"]): {
            k: row[k] for k in ("workspace_id", "contact_id", "channel", "scope", "state", "source", "at")
        }
        | {"consent_id": int(i)}
        for row, i in zip(ledger, ids, strict=True)
    }
    moved: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    for r in newest.values():
        current_id = row_ids.get((r["contact_id"], r["channel"], r["scope"]))
        if current_id is None:
            new.append(r)
        else:
            moved.append({"id": current_id} | {k: r[k] for k in ("state", "source", "consent_id", "at")})
    if moved:
        await session.execute(update(ConsentCurrent), moved)
    if new:
        await session.execute(insert(ConsentCurrent), new)
    return len(ledger)

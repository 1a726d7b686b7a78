"""Recording consent and reading it back: one ledger for every channel (DESIGN §9).

`record` is the only writer: under the contact's row lock it appends a `consent` row, moves
`consent_state` and emits `consent.changed`, all in the caller's transaction. A decision that
does not change the current state (a second one-click POST, a mail scanner replaying it) writes
nothing: the ledger shows each change once, with what caused it first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.models import ALL_SCOPE, Consent, ConsentCurrent, ConsentSource, ConsentState
from server.contacts.changes import get_contact
from server.db import utcnow
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


async def opted_out(session: AsyncSession, keys: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which (contact, channel) pairs are opted out, in one query (the dispatcher asks once per
    claimed batch). An opt-out at any scope of the channel counts: a message is not routed by
    sender yet, so the only safe reading of "STOP to one number" is "no marketing on the channel"."""
    wanted = set(keys)
    if not wanted:
        return set()
    rows = await session.execute(
        select(ConsentCurrent.contact_id, ConsentCurrent.channel)
        .where(
            tuple_(ConsentCurrent.contact_id, ConsentCurrent.channel).in_(list(wanted)),
            ConsentCurrent.state == ConsentState.opted_out.value,
        )
        .distinct()
    )
    return {(c, ch) for c, ch in rows.all()}

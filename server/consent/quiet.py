"""Quiet hours at send time (DESIGN §9): which claimed marketing messages fall in their contact's
quiet window, and until when.

Checked by the dispatcher on every claimed batch, not only when a message is created: a message
created at noon for 3 a.m. is due inside the window, and so is a retry that comes due at night.
One query for the batch's workspace settings and, only when some workspace has quiet hours, one for
its contacts' zones; the rest is arithmetic (server/consent/localtime.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.localtime import zone, zone_name_for
from server.consent.models import MARKETING
from server.contacts.models import Contact
from server.messages.claims import Claimed
from server.workspaces import settings as workspace_settings

PHONE_CHANNELS = ("sms", "whatsapp")


def held_reason(until: dt.datetime, zone_name: str) -> str:
    local = until.astimezone(zone(zone_name))
    return f"held by quiet hours until {until:%Y-%m-%dT%H:%M:%SZ} ({local:%H:%M} {zone_name})"


async def holds(
    session: AsyncSession, claimed: Sequence[Claimed], *, now: dt.datetime
) -> list[tuple[Claimed, dt.datetime, str]]:
    """(message, until, reason) for each marketing message of `claimed` due inside its contact's
    quiet window at `now`."""
    marketing = [m for m in claimed if m.category == MARKETING]
    if not marketing:
        return []
    configured = {
        wid: s
        for wid, s in (
            await workspace_settings.get_many(session, {m.workspace_id for m in marketing})
        ).items()
        if s.quiet_hours is not None
    }
    candidates = [m for m in marketing if m.workspace_id in configured]
    if not candidates:
        return []
    ids = {m.contact_id for m in candidates if m.contact_id is not None}
    people = (
        {
            cid: (attributes, phone)
            for cid, attributes, phone in (
                await session.execute(
                    select(Contact.id, Contact.attributes, Contact.phone).where(Contact.id.in_(ids))
                )
            ).all()
        }
        if ids
        else {}
    )
    out: list[tuple[Claimed, dt.datetime, str]] = []
    for m in candidates:
        ws = configured[m.workspace_id]
        window = ws.quiet()
        assert window is not None
        attributes, phone = people.get(m.contact_id or 0, (None, None))
        # The number written to is where the recipient is (a conversation may reply to another).
        number = m.to_address if m.channel in PHONE_CHANNELS else phone
        name = zone_name_for(attributes, number, ws.timezone)
        until = window.until(now, zone(name))
        if until is not None:
            out.append((m, until, held_reason(until, name)))
    return out

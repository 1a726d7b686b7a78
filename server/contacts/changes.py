"""The contact-change recorder: every change of a contact goes through `record`.

A change is written as one unit in the caller's transaction: the contact's new `version` (and
`updated_at`), one `audit` row per changed field carrying that version, and one
`contact.created|updated|deleted` event (DESIGN §6) whose `changed` lists the new values. Updates,
identities and merges all record here, so the version a client sees in an event is always the
version of the audit rows an `If-Match` check reads.

Also the helpers that both the contact service and the identities module need (finding and
locking a contact, the workspace lock), so neither imports the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts.models import Audit, Contact
from server.db import utcnow
from server.errors import NotFound
from server.events.service import NewEvent, emit_many
from server.workspaces.models import Workspace

FIELDS = ("name", "email", "phone", "attributes", "tags")

Diff = Mapping[str, tuple[Any, Any]]  # field -> (old, new)


class ContactNotFound(NotFound):
    what = "contact"


class DuplicateEmail(Exception):
    pass


def snapshot(c: Contact) -> dict[str, Any]:
    return {
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "attributes": dict(c.attributes),
        "tags": list(c.tags),
    }


async def get_contact(
    session: AsyncSession, *, workspace_id: int, contact_id: int, for_update: bool = False
) -> Contact:
    stmt = select(Contact).where(Contact.id == contact_id, Contact.workspace_id == workspace_id)
    if for_update:
        stmt = stmt.with_for_update()
    contact = (await session.execute(stmt)).scalar_one_or_none()
    if contact is None:
        raise ContactNotFound(contact_id)
    return contact


async def lock_workspace(session: AsyncSession, workspace_id: int) -> None:
    await session.execute(select(Workspace.id).where(Workspace.id == workspace_id).with_for_update())


async def flush_contact(session: AsyncSession) -> None:
    """Flush a contact's row: the only unique rule it can break is the email's (→ DuplicateEmail)."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateEmail() from exc


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded change of one contact: its audit rows and its event."""

    type: Literal["contact.created", "contact.updated", "contact.deleted"]
    workspace_id: int
    contact_id: int
    version: int
    by: int | None
    audit: Sequence[tuple[str, Any, Any]]  # (field, old, new): several rows may share a field
    changed: dict[str, Any]  # the event's `changed`
    at: dt.datetime = field(default_factory=utcnow)
    extra: dict[str, Any] = field(default_factory=dict)  # more event data (`merged_from`, `merged_into`)
    by_key: int | None = None  # the API key that made the change (then `by` is None)

    def audit_rows(self) -> list[Audit]:
        return [
            Audit(
                workspace_id=self.workspace_id,
                contact_id=self.contact_id,
                user_id=self.by,
                api_key_id=self.by_key,
                field=name,
                old=old,
                new=new,
                version=self.version,
                at=self.at,
            )
            for name, old, new in self.audit
        ]

    def event(self) -> NewEvent:
        data = {
            "contact_id": self.contact_id,
            "version": self.version,
            "changed": self.changed,
            "by": self.by,
            **self.extra,
        }
        return NewEvent(self.type, data, contact_id=self.contact_id)


def created(contact: Contact, *, by: int | None, by_key: int | None = None) -> Change:
    """A new contact: `changed` holds every field, the audit only the ones with a value."""
    values = snapshot(contact)
    return Change(
        "contact.created",
        contact.workspace_id,
        contact.id,
        contact.version,
        by,
        [(k, None, v) for k, v in values.items() if v not in (None, "", [], {})],
        values,
        by_key=by_key,
    )


def deleted(
    contact: Contact,
    *,
    by: int | None,
    audit: bool = True,
    extra: dict[str, Any] | None = None,
    by_key: int | None = None,
) -> Change:
    """The contact is going: its last version is one past the current. A merged contact has no
    `deleted` audit row (`audit=False`): its history moves to the survivor, which notes the merge."""
    return Change(
        "contact.deleted",
        contact.workspace_id,
        contact.id,
        contact.version + 1,
        by,
        [("deleted", False, True)] if audit else [],
        {},
        extra=extra or {},
        by_key=by_key,
    )


def updated(
    contact: Contact,
    diff: Diff,
    *,
    by: int | None,
    version: int | None = None,
    notes: Sequence[tuple[str, Any, Any]] = (),
    extra: dict[str, Any] | None = None,
    by_key: int | None = None,
) -> Change:
    """Bump the contact to `version` (default: one up) for the fields in `diff` (already applied to
    it); `notes` are more audit rows that are not field changes (a merge's `merged_from`)."""
    contact.version = contact.version + 1 if version is None else version
    contact.updated_at = utcnow()
    return Change(
        "contact.updated",
        contact.workspace_id,
        contact.id,
        contact.version,
        by,
        [*((name, old, new) for name, (old, new) in diff.items()), *notes],
        {name: new for name, (_old, new) in diff.items()},
        at=contact.updated_at,
        extra=extra or {},
        by_key=by_key,
    )


async def record(session: AsyncSession, workspace_id: int, changes: Sequence[Change]) -> None:
    """Write the audit rows and emit the events of `changes` (in order) in this transaction.

    The contacts' rows are flushed first, so a duplicate email surfaces as `DuplicateEmail`
    before anything else is written."""
    await emit_many(session, workspace_id, await record_deferred(session, changes))


async def record_deferred(session: AsyncSession, changes: Sequence[Change]) -> list[NewEvent]:
    """`record` for a caller that emits once for a whole batch: the audit rows are written, the
    events returned, to be emitted (in order) before this transaction commits."""
    await flush_contact(session)
    session.add_all([row for c in changes for row in c.audit_rows()])
    return [c.event() for c in changes]


def bulk_audit(
    workspace_id: int,
    contact_id: int,
    name: str,
    old: Any,
    new: Any,
    *,
    version: int,
    at: dt.datetime,
    by: int | None,
    by_key: int | None,
) -> dict[str, Any]:
    """One audit row of a bulk change (`record_bulk`): the row `Change.audit_rows` would write."""
    return {
        "workspace_id": workspace_id,
        "contact_id": contact_id,
        "user_id": by,
        "api_key_id": by_key,
        "field": name,
        "old": old,
        "new": new,
        "version": version,
        "at": at,
    }


async def record_bulk(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """The recorder's bulk form, for a change applied set-wise to many contacts (a bulk action):
    the audit rows (`bulk_audit`, carrying each contact's new version) in one statement, and no
    `contact.*` event per contact: the caller emits one progress event per chunk, as an import
    does (docs/decisions.md). The contacts' rows are the caller's to write in the same transaction."""
    if rows:
        await session.execute(insert(Audit), list(rows))


async def record_change(
    session: AsyncSession, contact: Contact, diff: Diff, *, user_id: int | None, api_key_id: int | None = None
) -> dict[str, Any]:
    """Bump version, write audit rows and emit `contact.updated` for `diff` (field -> (old, new),
    already applied to `contact`); returns the event's `changed`."""
    change = updated(contact, diff, by=user_id, by_key=api_key_id)
    await record(session, contact.workspace_id, [change])
    return change.changed

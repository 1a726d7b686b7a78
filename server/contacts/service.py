"""Contacts: every change writes its audit rows and its event in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts import changes as recorder
from server.contacts.changes import FIELDS as FIELDS
from server.contacts.changes import ContactNotFound as ContactNotFound
from server.contacts.changes import DuplicateEmail as DuplicateEmail
from server.contacts.changes import get_contact as get_contact
from server.contacts.changes import snapshot as snapshot
from server.contacts.identities import check_free
from server.contacts.models import Audit, Contact
from server.contacts.search import list_query
from server.db import dialect_of, utcnow


class VersionUnknown(Exception):
    pass


@dataclass
class EditConflict(Exception):
    conflicts: list[dict[str, Any]]
    current: dict[str, Any]  # the contact as it is now (a plain copy: the transaction is rolled back)


@dataclass
class PatchResult:
    contact: Contact
    changed: dict[str, Any] = field(default_factory=dict)


def as_dict(c: Contact) -> dict[str, Any]:
    return {
        "id": c.id,
        **snapshot(c),
        "version": c.version,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def _value(c: Contact, name: str) -> Any:
    if name.startswith("attributes."):
        return c.attributes.get(name.removeprefix("attributes."))
    return getattr(c, name)


def _apply(c: Contact, name: str, value: Any) -> None:
    if name.startswith("attributes."):
        attrs = dict(c.attributes)
        key = name.removeprefix("attributes.")
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
        c.attributes = attrs
    else:
        setattr(c, name, value)


async def create_contact(
    session: AsyncSession,
    *,
    workspace_id: int,
    user_id: int | None,
    data: dict[str, Any],
    api_key_id: int | None = None,
) -> Contact:
    # identities (issue 9): the email/phone may not be any contact's extra identity → 409
    await check_free(session, workspace_id=workspace_id, email=data.get("email"), phone=data.get("phone"))
    now = utcnow()
    contact = Contact(workspace_id=workspace_id, version=1, created_at=now, updated_at=now, **data)
    session.add(contact)
    await recorder.flush_contact(session)  # the id, for the audit rows and the event
    await recorder.record(session, workspace_id, [recorder.created(contact, by=user_id, by_key=api_key_id)])
    return contact


async def list_contacts(
    session: AsyncSession,
    *,
    workspace_id: int,
    q: str | None = None,
    tag: str | None = None,
    before_id: int | None = None,
    limit: int,
) -> list[Contact]:
    """Newest first, as `list_query` filters them."""
    stmt = list_query(dialect_of(session), workspace_id=workspace_id, q=q, tag=tag, before_id=before_id)
    return list((await session.execute(stmt.limit(limit))).scalars())


async def tags_in_use(session: AsyncSession, *, workspace_id: int, sample: int, limit: int) -> list[str]:
    """The tags of the newest `sample` contacts, sorted, at most `limit` of them."""
    rows = await session.execute(
        select(Contact.tags)
        .where(Contact.workspace_id == workspace_id)
        .order_by(Contact.id.desc())
        .limit(sample)
    )
    return sorted({t for (ts,) in rows for t in (ts or [])})[:limit]


async def patch_contact(
    session: AsyncSession,
    *,
    workspace_id: int,
    contact_id: int,
    user_id: int | None,
    changes: dict[str, Any],
    if_match: int | None,
    api_key_id: int | None = None,
) -> PatchResult:
    """Apply a patch made against version `if_match` (None: last writer wins).

    Fields changed by others since that version are merged around, unless the patch changes
    one of them to a different value: then nothing is written and EditConflict says where."""
    contact = await get_contact(session, workspace_id=workspace_id, contact_id=contact_id, for_update=True)
    if if_match is not None and if_match > contact.version:
        raise VersionUnknown(if_match)
    if if_match is not None and if_match < contact.version:
        rows = await session.execute(
            select(Audit.field).where(
                Audit.workspace_id == workspace_id, Audit.contact_id == contact_id, Audit.version > if_match
            )
        )
        theirs = {r[0] for r in rows}
        conflicts = [
            {"field": name, "yours": value, "theirs": _value(contact, name)}
            for name, value in changes.items()
            if (name in theirs or (name.startswith("attributes.") and "attributes" in theirs))
            and _value(contact, name) != value
        ]
        if conflicts:
            raise EditConflict(conflicts=conflicts, current=as_dict(contact))

    # identities (issue 9): a new email/phone may not be any contact's extra identity → 409
    await check_free(
        session,
        workspace_id=workspace_id,
        email=changes.get("email") if changes.get("email") != contact.email else None,
        phone=changes.get("phone") if changes.get("phone") != contact.phone else None,
        contact_id=contact.id,
    )
    diff: dict[str, tuple[Any, Any]] = {}
    for name, value in changes.items():
        old = _value(contact, name)
        if old != value:
            diff[name] = (old, value)
            _apply(contact, name, value)
    if not diff:
        return PatchResult(contact)
    changed = await recorder.record_change(session, contact, diff, user_id=user_id, api_key_id=api_key_id)
    return PatchResult(contact, changed)


async def delete_contact(
    session: AsyncSession,
    *,
    workspace_id: int,
    contact_id: int,
    user_id: int | None,
    api_key_id: int | None = None,
) -> None:
    contact = await get_contact(session, workspace_id=workspace_id, contact_id=contact_id, for_update=True)
    change = recorder.deleted(contact, by=user_id, by_key=api_key_id)
    await session.delete(contact)
    await recorder.record(session, workspace_id, [change])


async def history(
    session: AsyncSession, *, workspace_id: int, contact_id: int, before_id: int | None, limit: int
) -> list[Audit]:
    await get_contact(session, workspace_id=workspace_id, contact_id=contact_id)
    stmt = select(Audit).where(Audit.workspace_id == workspace_id, Audit.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(Audit.id < before_id)
    rows = await session.execute(stmt.order_by(Audit.id.desc()).limit(limit))
    return list(rows.scalars())

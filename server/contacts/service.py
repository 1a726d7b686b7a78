"""Contacts: every change writes its audit rows and its event in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts.identities import check_free
from server.contacts.models import Audit, Contact, ContactIdentity
from server.db import json_array_contains, utcnow
from server.errors import NotFound
from server.events.service import emit

FIELDS = ("name", "email", "phone", "attributes", "tags")


class ContactNotFound(NotFound):
    what = "contact"


class DuplicateEmail(Exception):
    pass


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


def snapshot(c: Contact) -> dict[str, Any]:
    return {
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "attributes": dict(c.attributes),
        "tags": list(c.tags),
    }


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


def _audit(
    c: Contact, user_id: int | None, changes: dict[str, tuple[Any, Any]], api_key_id: int | None = None
) -> list[Audit]:
    now = utcnow()
    return [
        Audit(
            workspace_id=c.workspace_id,
            contact_id=c.id,
            user_id=user_id,
            api_key_id=api_key_id,
            field=name,
            old=old,
            new=new,
            version=c.version,
            at=now,
        )
        for name, (old, new) in changes.items()
    ]


async def _flush_unique(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateEmail() from exc


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
    await _flush_unique(session)
    values = snapshot(contact)
    session.add_all(
        _audit(
            contact,
            user_id,
            {k: (None, v) for k, v in values.items() if v not in (None, "", [], {})},
            api_key_id,
        )
    )
    await emit(
        session,
        workspace_id,
        "contact.created",
        {"contact_id": contact.id, "version": contact.version, "changed": values, "by": user_id},
        contact_id=contact.id,
    )
    return contact


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


def list_query(
    dialect: str, *, workspace_id: int, q: str | None, tag: str | None, before_id: int | None
) -> Select[Any]:
    stmt = select(Contact).where(Contact.workspace_id == workspace_id)
    if q:
        like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        extra = exists().where(
            ContactIdentity.contact_id == Contact.id,
            ContactIdentity.value.like(like, escape="\\"),  # stored lower-cased (emails) or E.164
        )
        stmt = stmt.where(
            or_(
                func.lower(Contact.name).like(like, escape="\\"),
                func.lower(Contact.email).like(like, escape="\\"),
                Contact.phone.like(like, escape="\\"),
                extra,
            )
        )
    if tag:
        stmt = stmt.where(json_array_contains(dialect, Contact.tags, tag))
    if before_id is not None:
        stmt = stmt.where(Contact.id < before_id)
    return stmt.order_by(Contact.id.desc())


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
    contact.version += 1
    contact.updated_at = utcnow()
    await _flush_unique(session)
    session.add_all(_audit(contact, user_id, diff, api_key_id))
    changed = {name: new for name, (_old, new) in diff.items()}
    await emit(
        session,
        workspace_id,
        "contact.updated",
        {"contact_id": contact.id, "version": contact.version, "changed": changed, "by": user_id},
        contact_id=contact.id,
    )
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
    version = contact.version + 1
    session.add(
        Audit(
            workspace_id=workspace_id,
            contact_id=contact_id,
            user_id=user_id,
            api_key_id=api_key_id,
            field="deleted",
            old=False,
            new=True,
            version=version,
        )
    )
    await session.delete(contact)
    await emit(
        session,
        workspace_id,
        "contact.deleted",
        {"contact_id": contact_id, "version": version, "changed": {}, "by": user_id},
        contact_id=contact_id,
    )


async def history(
    session: AsyncSession, *, workspace_id: int, contact_id: int, before_id: int | None, limit: int
) -> list[Audit]:
    await get_contact(session, workspace_id=workspace_id, contact_id=contact_id)
    stmt = select(Audit).where(Audit.workspace_id == workspace_id, Audit.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(Audit.id < before_id)
    rows = await session.execute(stmt.order_by(Audit.id.desc()).limit(limit))
    return list(rows.scalars())

"""A contact's extra emails and phones (`contact_identity`); the primary ones stay on `contact`.

Every email, primary or extra, is unique within a workspace, and so is every extra phone (a phone
may not be both one contact's primary and another's extra identity). Primary phones alone may
repeat, as before: DESIGN §3 makes only the email unique. Checks that span the two tables run under
the workspace row lock (the lock that event ids take anyway), taken after any contact row lock.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.api import Out, Schema
from server.contacts.changes import get_contact, lock_workspace, record_change
from server.contacts.models import Contact, ContactIdentity
from server.errors import NotFound, Problem
from server.validators import normalize_email, normalize_phone

Kind = Literal["email", "phone"]


class AddressTaken(Problem):
    """409: the address is already a primary or extra identity in this workspace."""

    def __init__(self, kind: str, value: str, *, own: bool = False) -> None:
        where = "this contact" if own else "another contact"
        super().__init__(
            409,
            f"The {kind} {value} already belongs to {where} in this workspace.",
            errors=[{"field": kind if kind == "phone" else "email", "message": f"already used by {where}"}],
        )
        self.kind = kind
        self.value = value


class IdentityNotFound(NotFound):
    what = "identity on this contact"


class IdentityIn(Schema):
    kind: Kind
    value: str = Field(max_length=320)

    @field_validator("value")
    @classmethod
    def _normalize(cls, v: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        return normalize_value(kind, v) if kind else v


class IdentityOut(Out):
    id: int | None = Field(description="null for the primary email and phone, which live on the contact")
    kind: Kind
    value: str
    primary: bool = False


class Identities(Out):
    items: list[IdentityOut]


def normalize_value(kind: str, value: str) -> str:
    """How an identity is stored: a lower-cased email, an E.164 phone."""
    return normalize_email(value).lower() if kind == "email" else normalize_phone(value)


async def check_free(
    session: AsyncSession,
    *,
    workspace_id: int,
    email: str | None = None,
    phone: str | None = None,
    contact_id: int | None = None,
) -> None:
    """Raise AddressTaken when `email`/`phone`, about to become `contact_id`'s primary one, is
    already an extra identity of any contact (its own included). Email against other primaries is
    left to the unique index on `contact`."""
    if email is None and phone is None:
        return
    await lock_workspace(session, workspace_id)
    wanted = []
    if email:
        wanted.append(("email", email.lower()))
    if phone:
        wanted.append(("phone", phone))
    for kind, value in wanted:
        owner = (
            await session.execute(
                select(ContactIdentity.contact_id).where(
                    ContactIdentity.workspace_id == workspace_id,
                    ContactIdentity.kind == kind,
                    ContactIdentity.value == value,
                )
            )
        ).scalar_one_or_none()
        if owner is not None:
            raise AddressTaken(kind, value, own=owner == contact_id)


async def _contact(session: AsyncSession, workspace_id: int, contact_id: int, *, lock: bool) -> Contact:
    return await get_contact(session, workspace_id=workspace_id, contact_id=contact_id, for_update=lock)


async def list_identities(session: AsyncSession, *, workspace_id: int, contact_id: int) -> list[IdentityOut]:
    contact = await _contact(session, workspace_id, contact_id, lock=False)
    out = []
    if contact.email:
        out.append(IdentityOut(id=None, kind="email", value=contact.email, primary=True))
    if contact.phone:
        out.append(IdentityOut(id=None, kind="phone", value=contact.phone, primary=True))
    rows = await session.execute(
        select(ContactIdentity).where(ContactIdentity.contact_id == contact.id).order_by(ContactIdentity.id)
    )
    out += [IdentityOut.model_validate(r) for r in rows.scalars()]
    return out


async def _values(session: AsyncSession, contact_id: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(ContactIdentity).where(ContactIdentity.contact_id == contact_id).order_by(ContactIdentity.id)
    )
    return [{"kind": r.kind, "value": r.value} for r in rows.scalars()]


async def _changed(session: AsyncSession, contact: Contact, user_id: int | None, old: list[Any]) -> None:
    """Record a change of the extra identities as one `identities` field."""
    new = await _values(session, contact.id)
    await record_change(session, contact, {"identities": (old, new)}, user_id=user_id)


async def add_identity(
    session: AsyncSession, *, workspace_id: int, contact_id: int, user_id: int | None, kind: str, value: str
) -> ContactIdentity:
    """Add an extra email or phone (`value` already normalised)."""
    contact = await _contact(session, workspace_id, contact_id, lock=True)
    await lock_workspace(session, workspace_id)
    column = func.lower(Contact.email) if kind == "email" else Contact.phone
    holder = (
        await session.execute(
            select(Contact.id).where(Contact.workspace_id == workspace_id, column == value).limit(1)
        )
    ).scalar_one_or_none()
    if holder is not None:
        raise AddressTaken(kind, value, own=holder == contact.id)
    await check_free(session, workspace_id=workspace_id, contact_id=contact.id, **{kind: value})
    old = await _values(session, contact.id)
    identity = ContactIdentity(workspace_id=workspace_id, contact_id=contact.id, kind=kind, value=value)
    session.add(identity)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent writer on a database without the workspace lock
        raise AddressTaken(kind, value) from None
    await _changed(session, contact, user_id, old)
    return identity


async def remove_identity(
    session: AsyncSession, *, workspace_id: int, contact_id: int, identity_id: int, user_id: int | None
) -> None:
    contact = await _contact(session, workspace_id, contact_id, lock=True)
    identity = (
        await session.execute(
            select(ContactIdentity).where(
                ContactIdentity.id == identity_id, ContactIdentity.contact_id == contact.id
            )
        )
    ).scalar_one_or_none()
    if identity is None:
        raise IdentityNotFound(identity_id)
    old = await _values(session, contact.id)
    await session.delete(identity)
    await session.flush()
    await _changed(session, contact, user_id, old)

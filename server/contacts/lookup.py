"""Finding one contact of a workspace: shared by the contact service and identities (apart, so
neither imports the other)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts.models import Contact
from server.errors import NotFound

__all__ = ["ContactNotFound", "get_contact"]


class ContactNotFound(NotFound):
    what = "contact"


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

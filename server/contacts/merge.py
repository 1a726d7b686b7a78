"""Merging duplicate contacts into one, in one transaction.

The survivor takes the merged contacts' messages, history (audit rows), tags and addresses;
the merged contacts are deleted. Field values are the survivor's unless `fields` names the
contact to take one from; an empty survivor field is filled from the first merged contact that
has it. The merged contacts' emails and phones become the survivor's extra identities.

The survivor's new version is above every merged contact's, so the moved audit rows (which keep
their own version numbers) never look newer than the merge to an `If-Match` check.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts import changes as recorder
from server.contacts.changes import FIELDS, ContactNotFound, lock_workspace, snapshot
from server.contacts.models import Audit, Contact, ContactIdentity
from server.errors import Problem
from server.messages.models import Message

CHOOSABLE = ("name", "email", "phone", "attributes")  # tags are always the union


def _empty(value: Any) -> bool:
    return value in (None, "", [], {})


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "The merge request is not valid.", errors=[{"field": field, "message": message}])


async def merge_contacts(
    session: AsyncSession,
    *,
    workspace_id: int,
    user_id: int | None,
    survivor_id: int,
    from_ids: list[int],
    fields: dict[str, int] | None = None,
) -> Contact:
    fields = fields or {}
    merged_ids = list(dict.fromkeys(from_ids))
    if not merged_ids:
        raise _invalid("from", "name at least one contact to merge")
    if survivor_id in merged_ids:
        raise _invalid("from", "a contact cannot be merged with itself")
    everyone = [survivor_id, *merged_ids]
    for name, source in fields.items():
        if name not in CHOOSABLE:
            raise _invalid(f"fields.{name}", f"choose among {', '.join(CHOOSABLE)}")
        if source not in everyone:
            raise _invalid(f"fields.{name}", "must be the surviving contact or one of `from`")

    # Lock every contact in id order (two merges of overlapping sets then queue, never deadlock);
    # ids of another workspace are simply not found.
    rows = await session.execute(
        select(Contact)
        .where(Contact.workspace_id == workspace_id, Contact.id.in_(everyone))
        .order_by(Contact.id)
        .with_for_update()
    )
    by_id = {c.id: c for c in rows.scalars()}
    for cid in everyone:
        if cid not in by_id:
            raise ContactNotFound(cid)
    await lock_workspace(session, workspace_id)
    survivor = by_id[survivor_id]
    merged = [by_id[i] for i in merged_ids]
    before = snapshot(survivor)

    after = _chosen_values(survivor, merged, by_id, fields)
    extra = _extra_addresses([survivor, *merged], primary_email=after["email"], primary_phone=after["phone"])

    # Move every row that points at a merged contact.
    for model in (Message, Audit, ContactIdentity):
        await session.execute(
            update(model)
            .where(model.workspace_id == workspace_id, model.contact_id.in_(merged_ids))
            .values(contact_id=survivor_id)
        )
    for c in merged:
        await session.delete(c)
    await session.flush()  # frees the merged contacts' emails for the survivor

    held = {
        (r.kind, r.value): r
        for r in (
            await session.execute(select(ContactIdentity).where(ContactIdentity.contact_id == survivor_id))
        ).scalars()
    }
    for kind, value in (("email", (after["email"] or "").lower()), ("phone", after["phone"])):
        if (kind, value) in held:  # now the primary: not an extra identity as well
            await session.delete(held.pop((kind, value)))
    await session.flush()
    session.add_all(
        ContactIdentity(workspace_id=workspace_id, contact_id=survivor_id, kind=kind, value=value)
        for kind, value in extra
        if (kind, value) not in held
    )

    diff = {name: (before[name], after[name]) for name in FIELDS if before[name] != after[name]}
    for name, (_old, new) in diff.items():
        setattr(survivor, name, new)
    # Every merged contact's last event comes first, then the survivor's, all in one emit.
    gone = [recorder.deleted(c, by=user_id, audit=False, extra={"merged_into": survivor_id}) for c in merged]
    kept = recorder.updated(
        survivor,
        diff,
        by=user_id,
        version=max(c.version for c in by_id.values()) + 1,
        notes=[
            ("merged_from", None, {"id": c.id, "name": c.name, "email": c.email, "phone": c.phone})
            for c in merged
        ],
        extra={"merged_from": merged_ids},
    )
    await recorder.record(session, workspace_id, [*gone, kept])
    return survivor


def _chosen_values(
    survivor: Contact, merged: list[Contact], by_id: dict[int, Contact], fields: dict[str, int]
) -> dict[str, Any]:
    out = snapshot(survivor)
    for name in ("name", "email", "phone"):
        if name in fields:
            out[name] = getattr(by_id[fields[name]], name)
        elif _empty(out[name]):
            out[name] = next((getattr(c, name) for c in merged if not _empty(getattr(c, name))), out[name])
    # Attributes key by key: the chosen contact's (default the survivor's) win, others fill gaps.
    first = by_id[fields.get("attributes", survivor.id)]
    attrs: dict[str, Any] = {}
    for c in reversed([first, *(c for c in [survivor, *merged] if c is not first)]):
        attrs.update(c.attributes)
    out["attributes"] = attrs
    out["tags"] = list(dict.fromkeys(t for c in [survivor, *merged] for t in c.tags))
    return out


def _extra_addresses(
    contacts: list[Contact], *, primary_email: str | None, primary_phone: str | None
) -> list[tuple[str, str]]:
    """Every primary email/phone of the contacts except the survivor's new primary ones."""
    keep = {("email", (primary_email or "").lower()), ("phone", primary_phone or "")}
    out: list[tuple[str, str]] = []
    for c in contacts:
        for kind, value in (("email", (c.email or "").lower()), ("phone", c.phone or "")):
            if value and (kind, value) not in keep and (kind, value) not in out:
                out.append((kind, value))
    return out

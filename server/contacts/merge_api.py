"""Contact merge and a contact's extra emails and phones (issue 9)."""

from __future__ import annotations

from pydantic import ConfigDict, Field
from starlette.responses import Response

from server.api import Ctx, Router, Schema, json_response
from server.contacts import identities, merge
from server.contacts.api import contact_response
from server.contacts.identities import Identities, IdentityIn, IdentityOut
from server.contacts.schemas import ContactOut
from server.contacts.service import ContactNotFound
from server.errors import Problem

router = Router(tag="contacts")


class MergeIn(Schema):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: list[int] = Field(alias="from", min_length=1, max_length=100)
    fields: dict[str, int] = Field(
        default_factory=dict,
        description="field (name, email, phone, attributes) → id of the contact to take its value from",
    )


def _not_found(exc: ContactNotFound) -> Problem:
    return Problem(404, f"No such contact: {exc.args[0]}." if exc.args else "No such contact.")


@router.op(
    "POST",
    "/contacts/{contact_id}/merge",
    body=MergeIn,
    response=ContactOut,
    role="agent",
    responses={404: "a contact is not in this workspace", 422: "invalid merge"},
)
async def merge_into(ctx: Ctx[MergeIn]) -> Response:
    """Merge the `from` contacts into this one: messages, history, tags and addresses move here."""
    try:
        async with ctx.db.transaction() as s:
            survivor = await merge.merge_contacts(
                s,
                workspace_id=ctx.workspace_id,
                user_id=ctx.principal.by_user,
                survivor_id=ctx.path_int("contact_id"),
                from_ids=ctx.body.from_,
                fields=ctx.body.fields,
            )
    except ContactNotFound as exc:
        raise _not_found(exc) from None
    return contact_response(survivor)


@router.op("GET", "/contacts/{contact_id}/identities", response=Identities, responses={404: "not found"})
async def list_identities(ctx: Ctx[None]) -> Identities:
    """The contact's emails and phones: the primary ones first, then the extra ones."""
    try:
        async with ctx.db.transaction() as s:
            items = await identities.list_identities(
                s, workspace_id=ctx.workspace_id, contact_id=ctx.path_int("contact_id")
            )
    except ContactNotFound as exc:
        raise _not_found(exc) from None
    return Identities(items=items)


@router.op(
    "POST",
    "/contacts/{contact_id}/identities",
    body=IdentityIn,
    response=IdentityOut,
    status=201,
    role="agent",
    responses={404: "not found", 409: "the address is taken"},
)
async def add_identity(ctx: Ctx[IdentityIn]) -> Response:
    """Add an extra email or phone; it must not be used by any contact of the workspace."""
    try:
        async with ctx.db.transaction() as s:
            identity = await identities.add_identity(
                s,
                workspace_id=ctx.workspace_id,
                contact_id=ctx.path_int("contact_id"),
                user_id=ctx.principal.by_user,
                kind=ctx.body.kind,
                value=ctx.body.value,
            )
    except ContactNotFound as exc:
        raise _not_found(exc) from None
    return json_response(IdentityOut.model_validate(identity), 201)


@router.op(
    "DELETE",
    "/contacts/{contact_id}/identities/{identity_id}",
    status=204,
    role="agent",
    responses={404: "not found"},
)
async def remove_identity(ctx: Ctx[None]) -> Response:
    """Remove an extra email or phone."""
    try:
        async with ctx.db.transaction() as s:
            await identities.remove_identity(
                s,
                workspace_id=ctx.workspace_id,
                contact_id=ctx.path_int("contact_id"),
                identity_id=ctx.path_int("identity_id"),
                user_id=ctx.principal.by_user,
            )
    except ContactNotFound as exc:
        raise _not_found(exc) from None
    return Response(status_code=204)

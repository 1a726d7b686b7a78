from __future__ import annotations

import re

from starlette.responses import Response

from server.api import Ctx, Page, Router, json_response
from server.contacts import service
from server.contacts.schemas import (
    ContactIn,
    ContactOut,
    ContactPatch,
    ContactQuery,
    History,
    HistoryItem,
)
from server.errors import Problem
from server.pagination import PageQuery, decode_cursor, page_of

router = Router(tag="contacts")

_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _duplicate() -> Problem:
    return Problem(
        409,
        "Another contact in this workspace already has this email.",
        errors=[{"field": "email", "message": "already used by another contact"}],
    )


def contact_response(contact: object, status: int = 200) -> Response:
    out = ContactOut.model_validate(contact)
    return json_response(out, status, headers=_etag(out.version))


@router.op(
    "POST", "/contacts", body=ContactIn, response=ContactOut, status=201, role="agent", responses={409: "dup"}
)
async def create(ctx: Ctx[ContactIn]) -> Response:
    """Create a contact."""
    try:
        async with ctx.db.transaction() as s:
            contact = await service.create_contact(
                s,
                workspace_id=ctx.workspace_id,
                user_id=ctx.principal.by_user,
                data=ctx.body.model_dump(),
                api_key_id=ctx.principal.api_key_id,
            )
    except service.DuplicateEmail:
        raise _duplicate() from None
    return contact_response(contact, 201)


@router.op("GET", "/contacts", query=ContactQuery, response=Page[ContactOut])
async def list_contacts(ctx: Ctx[None]) -> Page[ContactOut]:
    """Contacts, newest first; `q` matches name, email or phone; `tag` filters by tag."""
    q: ContactQuery = ctx.query
    before = decode_cursor(q.cursor)
    async with ctx.db.transaction() as s:
        stmt = service.list_query(
            ctx.db.dialect, workspace_id=ctx.workspace_id, q=q.q, tag=q.tag, before_id=before
        )
        rows = list((await s.execute(stmt.limit(q.limit + 1))).scalars())
    return page_of(rows, q.limit, ContactOut.model_validate, Page[ContactOut])


@router.op("GET", "/contacts/{contact_id}", response=ContactOut, responses={404: "not found"})
async def get(ctx: Ctx[None]) -> Response:
    """One contact; the ETag is its version."""
    async with ctx.db.transaction() as s:
        contact = await service.get_contact(
            s, workspace_id=ctx.workspace_id, contact_id=ctx.path_int("contact_id")
        )
    return contact_response(contact)


def _if_match(header: str | None) -> int | None:
    if header is None or header.strip() == "*":
        return None
    m = _IF_MATCH.match(header)
    if not m:
        raise Problem(
            400,
            'If-Match must be the contact\'s version as an ETag, e.g. "3".',
            errors=[{"field": "If-Match", "message": "invalid"}],
        )
    return int(m.group(1))


@router.op(
    "PATCH",
    "/contacts/{contact_id}",
    body=ContactPatch,
    response=ContactOut,
    role="agent",
    responses={404: "not found", 409: "conflict", 412: "unknown version"},
)
async def patch(ctx: Ctx[ContactPatch]) -> Response:
    """Change fields. With `If-Match`, edits by others to other fields are merged; overlapping ones → 409."""
    contact_id = ctx.path_int("contact_id")
    if_match = _if_match(ctx.request.headers.get("if-match"))
    try:
        async with ctx.db.transaction() as s:
            result = await service.patch_contact(
                s,
                workspace_id=ctx.workspace_id,
                contact_id=contact_id,
                user_id=ctx.principal.by_user,
                changes=ctx.body.changes(),
                if_match=if_match,
                api_key_id=ctx.principal.api_key_id,
            )
    except service.DuplicateEmail:
        raise _duplicate() from None
    except service.VersionUnknown:
        raise Problem(412, "If-Match names a version this contact never had.") from None
    except service.EditConflict as exc:
        current = ContactOut.model_validate(exc.current)
        raise Problem(
            409,
            "Someone else changed the same fields since your version.",
            title="Edit conflict",
            conflicts=exc.conflicts,
            current=current.model_dump(mode="json"),
            headers=_etag(current.version),
        ) from None
    return contact_response(result.contact)


@router.op("DELETE", "/contacts/{contact_id}", status=204, role="agent", responses={404: "not found"})
async def delete(ctx: Ctx[None]) -> Response:
    """Delete a contact (its history stays in the audit log)."""
    async with ctx.db.transaction() as s:
        await service.delete_contact(
            s,
            workspace_id=ctx.workspace_id,
            contact_id=ctx.path_int("contact_id"),
            user_id=ctx.principal.by_user,
            api_key_id=ctx.principal.api_key_id,
        )
    return Response(status_code=204)


@router.op(
    "GET", "/contacts/{contact_id}/history", query=PageQuery, response=History, responses={404: "not found"}
)
async def history(ctx: Ctx[None]) -> History:
    """Changes to the contact, newest first."""
    q: PageQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.history(
            s,
            workspace_id=ctx.workspace_id,
            contact_id=ctx.path_int("contact_id"),
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, HistoryItem.model_validate, History)

"""`GET/POST /api/v1/api-keys`, `DELETE /api/v1/api-keys/{id}` (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator
from starlette.responses import Response

from server.api import Ctx, Out, Page, Router, Schema, json_response
from server.apikeys import service
from server.apikeys.models import ApiKey
from server.audit import service as audit
from server.db import utcnow
from server.pagination import PageQuery, decode_cursor, page_of

router = Router(tag="api-keys")

Scope = Literal["contacts:read", "contacts:write", "messages:send", "events:read", "admin"]


class ApiKeyIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1, max_length=5)
    expires_at: dt.datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _future(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        v = v if v.tzinfo else v.replace(tzinfo=dt.UTC)
        if v <= utcnow():
            raise ValueError("must be in the future")
        return v


class ApiKeyOut(Out):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_by: int | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    last_used_ip: str | None


class ApiKeyCreated(ApiKeyOut):
    key: str  # the secret: in this answer only


async def create_recorded(ctx: Ctx[Any], b: ApiKeyIn) -> tuple[ApiKey, str]:
    """Make a key and record it in the audit log (the API and the admin page)."""
    async with ctx.db.transaction() as s:
        key, secret = await service.create_key(
            s,
            workspace_id=ctx.workspace_id,
            name=b.name,
            scopes=b.scopes,
            expires_at=b.expires_at,
            created_by=ctx.principal.by_user,
        )
        audit.record_for(
            s,
            ctx,
            action="api_key.created",
            target=f"api_key:{key.id}",
            details={"name": key.name, "scopes": key.scopes, "prefix": key.prefix},
        )
    return key, secret


@router.op("POST", "/api-keys", body=ApiKeyIn, response=ApiKeyCreated, status=201, role="admin")
async def create(ctx: Ctx[ApiKeyIn]) -> Response:
    """Make a key; the answer's `key` is the only time the secret is shown."""
    key, secret = await create_recorded(ctx, ctx.body)
    out = ApiKeyCreated.model_validate({**ApiKeyOut.model_validate(key).model_dump(), "key": secret})
    return json_response(out, 201)


@router.op("GET", "/api-keys", query=PageQuery, response=Page[ApiKeyOut], role="admin")
async def list_keys(ctx: Ctx[None]) -> Page[ApiKeyOut]:
    """The workspace's keys, oldest first (prefix, scopes, creator, last use; never the secret)."""
    q: PageQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_keys(
            s, workspace_id=ctx.workspace_id, after_id=decode_cursor(q.cursor), limit=q.limit + 1
        )
    return page_of(rows, q.limit, ApiKeyOut.model_validate, Page[ApiKeyOut])


async def revoke(ctx: Ctx[Any], key_id: int) -> ApiKey:
    """Revoke a key and record it in the audit log (the API and the admin page)."""
    async with ctx.db.transaction() as s:
        key = await service.revoke_key(s, workspace_id=ctx.workspace_id, key_id=key_id)
        audit.record_for(
            s,
            ctx,
            action="api_key.revoked",
            target=f"api_key:{key.id}",
            details={"name": key.name, "prefix": key.prefix},
        )
    await ctx.services.access_ended(api_key_id=key.id)
    return key


@router.op("DELETE", "/api-keys/{key_id}", status=204, role="admin", responses={404: "not found"})
async def delete(ctx: Ctx[None]) -> Response:
    """Revoke a key: refused at once by every instance, and its open sockets, streams and
    long-polls on every instance are closed at once."""
    await revoke(ctx, ctx.path_int("key_id"))
    return Response(status_code=204)

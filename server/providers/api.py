from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.responses import Response

from server.api import Ctx, Page, Query, Router, json_response
from server.audit import service as audit
from server.conversations.webhooks import inbound_url, issue_inbound_token
from server.errors import Problem
from server.pagination import PAGE_LIMIT, PageLimit, decode_cursor, page_of
from server.providers import service
from server.providers.adapters import ConfigError
from server.providers.models import Provider
from server.providers.schemas import ProviderIn, ProviderOut, ProviderPatch
from server.templates.schemas import Channel

router = Router(tag="providers")


class ProviderQuery(Query):
    channel: Channel | None = None
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)


def _base_url(ctx: Ctx[Any]) -> str:
    return ctx.services.settings.public_url or str(ctx.request.base_url)


def _out(ctx: Ctx[Any], provider: Provider) -> ProviderOut:
    return ProviderOut.model_validate(service.public_view(provider, _base_url(ctx)))


def _invalid(exc: ConfigError) -> Problem:
    return Problem(422, "The provider configuration is not valid.", errors=exc.errors)


@router.op("POST", "/providers", body=ProviderIn, response=ProviderOut, status=201, role="admin")
async def create(ctx: Ctx[ProviderIn]) -> Response:
    """Connect a provider; the answer holds its `webhook_url` and never its secrets."""
    try:
        async with ctx.db.transaction() as s:
            p = await service.create_provider(
                s,
                workspace_id=ctx.workspace_id,
                data=ctx.body.model_dump(),
                allow_private=ctx.services.settings.allow_private_endpoints,
            )
            audit.record_for(
                s,
                ctx,
                action="provider.created",
                target=f"provider:{p.id}",
                details={"name": p.name, "kind": p.kind, "channel": p.channel},
            )
            token = await issue_inbound_token(s, provider=p)  # conversations: shown this once
    except ConfigError as exc:
        raise _invalid(exc) from None
    out = _out(ctx, p)
    if token is not None:
        out.inbound_url = inbound_url(_base_url(ctx), p.id, p.kind, token)
    return json_response(out, 201)


@router.op("GET", "/providers", query=ProviderQuery, response=Page[ProviderOut], role="admin")
async def list_providers(ctx: Ctx[None]) -> Page[ProviderOut]:
    """Provider connections, oldest first."""
    q: ProviderQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_providers(
            s,
            workspace_id=ctx.workspace_id,
            channel=q.channel,
            after_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, lambda p: _out(ctx, p), Page[ProviderOut])


@router.op(
    "GET", "/providers/{provider_id}", response=ProviderOut, role="admin", responses={404: "not found"}
)
async def get(ctx: Ctx[None]) -> ProviderOut:
    """One provider connection."""
    async with ctx.db.transaction() as s:
        p = await service.get_provider(
            s, workspace_id=ctx.workspace_id, provider_id=ctx.path_int("provider_id")
        )
    return _out(ctx, p)


@router.op(
    "PATCH",
    "/providers/{provider_id}",
    body=ProviderPatch,
    response=ProviderOut,
    role="admin",
    responses={404: "not found"},
)
async def patch(ctx: Ctx[ProviderPatch]) -> ProviderOut:
    """Change a connection; `config` is merged, so secrets not sent again are kept, except when
    the change re-points it (`base_url`, host, port, webhook URL, domain): then its stored secrets
    must be sent again (422 naming them otherwise)."""
    try:
        async with ctx.db.transaction() as s:
            p = await service.update_provider(
                s,
                workspace_id=ctx.workspace_id,
                provider_id=ctx.path_int("provider_id"),
                changes=(changes := ctx.body.model_dump(exclude_unset=True)),
                allow_private=ctx.services.settings.allow_private_endpoints,
            )
            audit.record_for(
                s,
                ctx,
                action="provider.updated",
                target=f"provider:{p.id}",
                details={"fields": audit.changed_fields(changes)},
            )
    except ConfigError as exc:
        raise _invalid(exc) from None
    return _out(ctx, p)


@router.op("DELETE", "/providers/{provider_id}", status=204, role="admin", responses={404: "not found"})
async def delete(ctx: Ctx[None]) -> Response:
    """Remove a provider connection."""
    async with ctx.db.transaction() as s:
        provider_id = ctx.path_int("provider_id")
        await service.delete_provider(s, workspace_id=ctx.workspace_id, provider_id=provider_id)
        audit.record_for(s, ctx, action="provider.deleted", target=f"provider:{provider_id}")
    return Response(status_code=204)

"""Outgoing webhook endpoints (admin only): registration, secrets, the delivery log, resend."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from server.api import Ctx, Page, Router, json_response
from server.audit import service as audit
from server.endpoints import service
from server.endpoints.guard import refused_host
from server.endpoints.models import Endpoint
from server.endpoints.schemas import (
    DeliveryDetail,
    DeliveryOut,
    DeliveryQuery,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
)
from server.errors import Problem
from server.pagination import PageQuery, decode_cursor, page_of

router = Router(tag="endpoints")

_NOT_FOUND = {404: "not found"}


def _with_secret(endpoint: Endpoint) -> EndpointWithSecret:
    return EndpointWithSecret.model_validate(endpoint)


def _check_address(ctx: Ctx[Any], url: str) -> None:
    why = None if ctx.services.settings.allow_private_endpoints else refused_host(url)
    if why is not None:
        raise Problem(422, "The URL must reach a public address.", errors=[{"field": "url", "message": why}])


def _wake(ctx: Ctx[Any]) -> None:
    """Let a deliverer in this process (embedded mode) act now instead of at its next poll."""
    deliverer = ctx.services.deliverer
    if deliverer is not None:
        deliverer.wake()


@router.op("POST", "/endpoints", body=EndpointIn, response=EndpointWithSecret, status=201, role="admin")
async def create(ctx: Ctx[EndpointIn]) -> Response:
    """Register an endpoint. The response holds its signing secret, shown this once."""
    _check_address(ctx, ctx.body.url)
    async with ctx.db.transaction() as s:
        endpoint = await service.create_endpoint(s, workspace_id=ctx.workspace_id, **ctx.body.model_dump())
        audit.record_for(
            s,
            ctx,
            action="endpoint.created",
            target=f"endpoint:{endpoint.id}",
            details={"url": endpoint.url, "events": list(endpoint.events or [])},
        )
    return json_response(_with_secret(endpoint), 201)


@router.op("GET", "/endpoints", query=PageQuery, response=Page[EndpointOut], role="admin")
async def list_endpoints(ctx: Ctx[None]) -> Page[EndpointOut]:
    """Endpoints, newest first."""
    q: PageQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_endpoints(
            s, workspace_id=ctx.workspace_id, before_id=decode_cursor(q.cursor), limit=q.limit + 1
        )
    return page_of(rows, q.limit, EndpointOut.model_validate, Page[EndpointOut])


@router.op("GET", "/endpoints/{endpoint_id}", response=EndpointOut, role="admin", responses=_NOT_FOUND)
async def get(ctx: Ctx[None]) -> EndpointOut:
    """One endpoint (without its secret)."""
    async with ctx.db.transaction() as s:
        endpoint = await service.get_endpoint(
            s, workspace_id=ctx.workspace_id, endpoint_id=ctx.path_int("endpoint_id")
        )
    return EndpointOut.model_validate(endpoint)


@router.op(
    "PATCH",
    "/endpoints/{endpoint_id}",
    body=EndpointPatch,
    response=EndpointOut,
    role="admin",
    responses=_NOT_FOUND,
)
async def patch(ctx: Ctx[EndpointPatch]) -> EndpointOut:
    """Change the URL, event types or description; `enabled: true` re-enables a disabled endpoint."""
    if ctx.body.url is not None:
        _check_address(ctx, ctx.body.url)
    async with ctx.db.transaction() as s:
        endpoint = await service.patch_endpoint(
            s,
            workspace_id=ctx.workspace_id,
            endpoint_id=ctx.path_int("endpoint_id"),
            changes=(changes := ctx.body.model_dump(exclude_unset=True)),
        )
        audit.record_for(
            s,
            ctx,
            action="endpoint.updated",
            target=f"endpoint:{endpoint.id}",
            details={"fields": audit.changed_fields(changes)},
        )
    _wake(ctx)
    return EndpointOut.model_validate(endpoint)


@router.op("DELETE", "/endpoints/{endpoint_id}", status=204, role="admin", responses=_NOT_FOUND)
async def delete(ctx: Ctx[None]) -> Response:
    """Delete an endpoint and its delivery log."""
    async with ctx.db.transaction() as s:
        endpoint_id = ctx.path_int("endpoint_id")
        await service.delete_endpoint(s, workspace_id=ctx.workspace_id, endpoint_id=endpoint_id)
        audit.record_for(s, ctx, action="endpoint.deleted", target=f"endpoint:{endpoint_id}")
    return Response(status_code=204)


@router.op(
    "POST",
    "/endpoints/{endpoint_id}/rotate-secret",
    response=EndpointWithSecret,
    role="admin",
    responses=_NOT_FOUND,
)
async def rotate_secret(ctx: Ctx[None]) -> EndpointWithSecret:
    """A new secret, shown this once; the previous one keeps signing for 24 hours."""
    async with ctx.db.transaction() as s:
        endpoint = await service.rotate_secret(
            s, workspace_id=ctx.workspace_id, endpoint_id=ctx.path_int("endpoint_id")
        )
    return _with_secret(endpoint)


@router.op(
    "GET",
    "/endpoints/{endpoint_id}/deliveries",
    query=DeliveryQuery,
    response=Page[DeliveryOut],
    role="admin",
    responses=_NOT_FOUND,
)
async def deliveries(ctx: Ctx[None]) -> Page[DeliveryOut]:
    """The delivery log, newest first: status, HTTP status code, latency, attempts."""
    q: DeliveryQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_deliveries(
            s,
            workspace_id=ctx.workspace_id,
            endpoint_id=ctx.path_int("endpoint_id"),
            status=q.status,
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, DeliveryOut.model_validate, Page[DeliveryOut])


@router.op(
    "GET",
    "/endpoints/{endpoint_id}/deliveries/{delivery_id}",
    response=DeliveryDetail,
    role="admin",
    responses=_NOT_FOUND,
)
async def delivery(ctx: Ctx[None]) -> DeliveryDetail:
    """One delivery with the body that is (or was) sent."""
    async with ctx.db.transaction() as s:
        row = await service.get_delivery(
            s,
            workspace_id=ctx.workspace_id,
            endpoint_id=ctx.path_int("endpoint_id"),
            delivery_id=ctx.path_int("delivery_id"),
        )
    return DeliveryDetail.model_validate(row)


@router.op(
    "POST",
    "/endpoints/{endpoint_id}/deliveries/{delivery_id}/resend",
    response=DeliveryOut,
    status=202,
    role="admin",
    responses={**_NOT_FOUND, 409: "still pending, or the endpoint is disabled"},
)
async def resend(ctx: Ctx[None]) -> Response:
    """Send the delivery's event again, as a new delivery at the end of the endpoint's queue."""
    try:
        async with ctx.db.transaction() as s:
            new = await service.resend(
                s,
                workspace_id=ctx.workspace_id,
                endpoint_id=ctx.path_int("endpoint_id"),
                delivery_id=ctx.path_int("delivery_id"),
            )
    except service.ResendRefused as exc:
        raise Problem(409, str(exc)) from None
    _wake(ctx)
    return json_response(DeliveryOut.model_validate(new), 202)

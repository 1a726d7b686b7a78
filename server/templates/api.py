from __future__ import annotations

from pydantic import Field
from starlette.responses import Response

from server.api import Ctx, Page, Query, Router, json_response
from server.consent.tokens import Links
from server.contacts import service as contacts
from server.errors import Problem
from server.pagination import PAGE_LIMIT, PageLimit, decode_cursor, page_of
from server.templates import render, service
from server.templates.schemas import Channel, PreviewIn, PreviewOut, TemplateIn, TemplateOut, TemplatePatch

router = Router(tag="templates")


class TemplateQuery(Query):
    channel: Channel | None = None
    limit: PageLimit = PAGE_LIMIT
    cursor: str | None = Field(default=None, max_length=100)


def _invalid(exc: render.TemplateInvalid) -> Problem:
    return Problem(422, "The template is not valid.", errors=exc.errors)


def _duplicate() -> Problem:
    return Problem(
        409,
        "Another template in this workspace has this name.",
        errors=[{"field": "name", "message": "already used by another template"}],
    )


@router.op(
    "POST",
    "/templates",
    body=TemplateIn,
    response=TemplateOut,
    status=201,
    role="agent",
    responses={409: "name taken"},
)
async def create(ctx: Ctx[TemplateIn]) -> Response:
    """Create a template; its subject and body are checked (syntax and sandbox) now."""
    try:
        async with ctx.db.transaction() as s:
            tpl = await service.create_template(s, workspace_id=ctx.workspace_id, data=ctx.body.model_dump())
    except render.TemplateInvalid as exc:
        raise _invalid(exc) from None
    except service.DuplicateName:
        raise _duplicate() from None
    return json_response(TemplateOut.model_validate(tpl), 201)


@router.op("GET", "/templates", query=TemplateQuery, response=Page[TemplateOut])
async def list_templates(ctx: Ctx[None]) -> Page[TemplateOut]:
    """Templates, newest first."""
    q: TemplateQuery = ctx.query
    async with ctx.db.transaction() as s:
        rows = await service.list_templates(
            s,
            workspace_id=ctx.workspace_id,
            channel=q.channel,
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, TemplateOut.model_validate, Page[TemplateOut])


@router.op("GET", "/templates/{template_id}", response=TemplateOut, responses={404: "not found"})
async def get(ctx: Ctx[None]) -> TemplateOut:
    """One template."""
    async with ctx.db.transaction() as s:
        tpl = await service.get_template(
            s, workspace_id=ctx.workspace_id, template_id=ctx.path_int("template_id")
        )
    return TemplateOut.model_validate(tpl)


@router.op(
    "PATCH",
    "/templates/{template_id}",
    body=TemplatePatch,
    response=TemplateOut,
    role="agent",
    responses={404: "not found", 409: "duplicate name"},
)
async def patch(ctx: Ctx[TemplatePatch]) -> TemplateOut:
    """Change a template; messages already created keep what they were rendered with."""
    try:
        async with ctx.db.transaction() as s:
            tpl = await service.update_template(
                s,
                workspace_id=ctx.workspace_id,
                template_id=ctx.path_int("template_id"),
                changes=ctx.body.model_dump(exclude_unset=True),
            )
    except render.TemplateInvalid as exc:
        raise _invalid(exc) from None
    except service.DuplicateName:
        raise _duplicate() from None
    # After the commit: drop the compiled copy on every instance.
    await ctx.services.caches.invalidate("template", ctx.workspace_id, tpl.id)
    return TemplateOut.model_validate(tpl)


@router.op("DELETE", "/templates/{template_id}", status=204, role="agent", responses={404: "not found"})
async def delete(ctx: Ctx[None]) -> Response:
    """Delete a template."""
    async with ctx.db.transaction() as s:
        await service.delete_template(
            s, workspace_id=ctx.workspace_id, template_id=ctx.path_int("template_id")
        )
    await ctx.services.caches.invalidate("template", ctx.workspace_id, ctx.path_int("template_id"))
    return Response(status_code=204)


@router.op(
    "POST",
    "/templates/{template_id}/preview",
    body=PreviewIn,
    response=PreviewOut,
    responses={404: "not found"},
)
async def preview(ctx: Ctx[PreviewIn]) -> PreviewOut:
    """Render a template for a contact (or none) and variables, without sending anything."""
    template_id = ctx.path_int("template_id")
    async with ctx.db.transaction() as s:
        tpl = await service.get_template(s, workspace_id=ctx.workspace_id, template_id=template_id)
        contact = None
        if ctx.body.contact_id is not None:
            try:
                contact = await contacts.get_contact(
                    s, workspace_id=ctx.workspace_id, contact_id=ctx.body.contact_id
                )
            except contacts.ContactNotFound:
                raise Problem(
                    422, "No such contact.", errors=[{"field": "contact_id", "message": "no such contact"}]
                ) from None
        context = render.context_for(contact, ctx.body.variables)
        # The recipient's own link, or where it will be (a preview for nobody cannot unsubscribe).
        context["unsubscribe_url"] = Links(ctx.services.settings).url(
            ctx.workspace_id, contact.id if contact is not None else 0, tpl.channel
        )
    try:
        subject, body = await render.render_isolated(tpl.subject, tpl.body, context)
    except render.RenderError as exc:
        raise Problem(422, exc.reason, errors=[{"field": exc.field, "message": exc.detail}]) from None
    except render.TemplateInvalid as exc:
        raise _invalid(exc) from None
    return PreviewOut(subject=subject, body=body)

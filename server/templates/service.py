"""Templates: checked (syntax and sandbox) before they are stored."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import utcnow
from server.errors import NotFound
from server.templates import render, whatsapp
from server.templates.models import Template


class TemplateNotFound(NotFound):
    what = "template"


class DuplicateName(Exception):
    pass


async def _flush_unique(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateName() from exc


UNSUBSCRIBE_MISSING = (
    "a marketing email must place {{ unsubscribe_url }} in its body (one-click unsubscribe, RFC 8058)"
)


def check_category(*, category: str, channel: str, body: str) -> None:
    """`render.TemplateInvalid` when a marketing email has no unsubscribe link in its body."""
    if category == "marketing" and channel == "email" and "unsubscribe_url" not in render.names_used(body):
        raise render.TemplateInvalid([{"field": "body", "message": UNSUBSCRIBE_MISSING}])


WHATSAPP_ONLY = "only a whatsapp template can name an approved WhatsApp template"


async def check_whatsapp(*, channel: str, meta: dict[str, Any] | None) -> None:
    """`render.TemplateInvalid` for WhatsApp metadata on another channel or a parameter that is not
    a valid template."""
    if meta is None:
        return
    if channel != "whatsapp":
        raise render.TemplateInvalid([{"field": "whatsapp", "message": WHATSAPP_ONLY}])
    await whatsapp.validate(meta)


async def create_template(session: AsyncSession, *, workspace_id: int, data: dict[str, Any]) -> Template:
    """`render.TemplateInvalid` for a bad subject, body or WhatsApp parameter, `DuplicateName` for a
    taken name."""
    await render.validate(data.get("subject", ""), data["body"])
    check_category(category=data.get("category", "transactional"), channel=data["channel"], body=data["body"])
    await check_whatsapp(channel=data["channel"], meta=data.get("whatsapp"))
    now = utcnow()
    tpl = Template(workspace_id=workspace_id, created_at=now, updated_at=now, **data)
    session.add(tpl)
    await _flush_unique(session)
    return tpl


async def get_template(
    session: AsyncSession, *, workspace_id: int, template_id: int, for_update: bool = False
) -> Template:
    stmt = select(Template).where(Template.id == template_id, Template.workspace_id == workspace_id)
    if for_update:
        stmt = stmt.with_for_update()
    tpl = (await session.execute(stmt)).scalar_one_or_none()
    if tpl is None:
        raise TemplateNotFound(template_id)
    return tpl


async def list_templates(
    session: AsyncSession, *, workspace_id: int, channel: str | None, before_id: int | None, limit: int
) -> list[Template]:
    stmt = select(Template).where(Template.workspace_id == workspace_id)
    if channel:
        stmt = stmt.where(Template.channel == channel)
    if before_id is not None:
        stmt = stmt.where(Template.id < before_id)
    rows = await session.execute(stmt.order_by(Template.id.desc()).limit(limit))
    return list(rows.scalars())


async def list_by_name(session: AsyncSession, *, workspace_id: int, limit: int) -> list[Template]:
    """The first `limit` templates by name (the dashboard's pickers and list)."""
    rows = await session.execute(
        select(Template).where(Template.workspace_id == workspace_id).order_by(Template.name).limit(limit)
    )
    return list(rows.scalars())


async def names_of(
    session: AsyncSession, *, workspace_id: int, template_ids: Collection[int]
) -> dict[int, str]:
    """The names of these templates of the workspace, by id (a list naming each row's template)."""
    if not template_ids:
        return {}
    rows = await session.execute(
        select(Template.id, Template.name).where(
            Template.workspace_id == workspace_id, Template.id.in_(sorted(template_ids))
        )
    )
    return {template_id: name for template_id, name in rows}


async def update_template(
    session: AsyncSession, *, workspace_id: int, template_id: int, changes: dict[str, Any]
) -> Template:
    tpl = await get_template(session, workspace_id=workspace_id, template_id=template_id, for_update=True)
    if "subject" in changes or "body" in changes:
        await render.validate(changes.get("subject", tpl.subject), changes.get("body", tpl.body))
    check_category(
        category=changes.get("category", tpl.category),
        channel=changes.get("channel", tpl.channel),
        body=changes.get("body", tpl.body),
    )
    if "whatsapp" in changes or "channel" in changes:
        await check_whatsapp(
            channel=changes.get("channel", tpl.channel), meta=changes.get("whatsapp", tpl.whatsapp)
        )
    for name, value in changes.items():
        setattr(tpl, name, value)
    tpl.updated_at = utcnow()
    await _flush_unique(session)
    return tpl


async def delete_template(session: AsyncSession, *, workspace_id: int, template_id: int) -> None:
    """Messages keep their rendered copy, so a template can go at any time."""
    tpl = await get_template(session, workspace_id=workspace_id, template_id=template_id, for_update=True)
    await session.delete(tpl)

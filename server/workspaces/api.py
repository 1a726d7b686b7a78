"""`/api/v1/workspace/settings`: read (any role) and replace (admin) the workspace's settings."""

from __future__ import annotations

from server.api import Ctx, Router
from server.workspaces import settings
from server.workspaces.settings import WorkspaceSettings, WorkspaceSettingsOut

router = Router(tag="workspace")


@router.op("GET", "/workspace/settings", response=WorkspaceSettingsOut)
async def get_settings(ctx: Ctx[None]) -> WorkspaceSettingsOut:
    """The workspace's settings, with defaults for what was never set."""
    async with ctx.db.transaction() as s:
        value = await settings.get(s, ctx.workspace_id)
    return WorkspaceSettingsOut.model_validate(value.model_dump(mode="json"))


@router.op("PUT", "/workspace/settings", body=WorkspaceSettings, response=WorkspaceSettingsOut, role="admin")
async def put_settings(ctx: Ctx[WorkspaceSettings]) -> WorkspaceSettingsOut:
    """Replace the settings (absent keys go back to their defaults): quiet hours, default time zone,
    keyword reply texts."""
    async with ctx.db.transaction() as s:
        value = await settings.put(s, ctx.workspace_id, ctx.body)
    return WorkspaceSettingsOut.model_validate(value.model_dump(mode="json"))

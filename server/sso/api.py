"""`GET/PUT /api/v1/sso` (admin): the workspace's OpenID Connect settings."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from server.api import Ctx, Out, Router, Schema
from server.audit import service as audit
from server.auth.models import Role
from server.errors import Problem
from server.sso import service
from server.sso.flow import redirect_uri
from server.sso.models import SsoConfig
from server.workspaces.models import Workspace

router = Router(tag="sso")


class SsoIn(Schema):
    display_name: str = Field(min_length=1, max_length=100, description='Shown as "Sign in with <name>".')
    issuer: str = Field(min_length=1, max_length=500)
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str | None = Field(
        default=None, min_length=1, max_length=2000, description="Write-only; omit to keep the stored one."
    )
    allowed_domains: list[str] = Field(min_length=1, max_length=100)
    role_claim: str = Field(default="groups", min_length=1, max_length=100)
    role_map: dict[str, Role] = Field(default_factory=dict, max_length=100)
    default_role: Role | None = Field(
        default=Role.viewer, description="Role of a user whose claim maps to none; null refuses them."
    )
    require_verified_email: bool = True
    password_login: bool = True

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            d = d.strip().lower().lstrip("@")
            if not service.DOMAIN.match(d):
                raise ValueError(f"{d!r} is not a domain name")
            out.append(d)
        return sorted(set(out))

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        return v.strip().rstrip("/")


class SsoOut(Out):
    display_name: str
    issuer: str
    client_id: str
    client_secret_set: bool
    allowed_domains: list[str]
    role_claim: str
    role_map: dict[str, Role]
    default_role: Role | None
    require_verified_email: bool
    password_login: bool
    workspace_slug: str
    login_url: str
    redirect_uri: str


def _out(ctx: Ctx[Any], cfg: SsoConfig, workspace: Workspace) -> SsoOut:
    callback = redirect_uri(ctx.request)
    return SsoOut(
        display_name=cfg.display_name,
        issuer=cfg.issuer,
        client_id=cfg.client_id,
        client_secret_set=bool(cfg.client_secret),
        allowed_domains=list(cfg.allowed_domains),
        role_claim=cfg.role_claim,
        role_map={k: Role(v) for k, v in cfg.role_map.items()},
        default_role=Role(cfg.default_role) if cfg.default_role else None,
        require_verified_email=cfg.require_verified_email,
        password_login=cfg.password_login,
        workspace_slug=workspace.slug,
        login_url=callback.removesuffix("/callback") + f"/{workspace.slug}/login",
        redirect_uri=callback,
    )


async def _workspace(s: AsyncSession, workspace_id: int) -> Workspace:
    ws = await s.get(Workspace, workspace_id)
    if ws is None:
        raise Problem(404, "No such workspace.")
    return ws


@router.op("GET", "/sso", response=SsoOut, role="admin", responses={404: "not configured"})
async def get_sso(ctx: Ctx[None]) -> SsoOut:
    """The workspace's single sign-on settings (the client secret is never returned)."""
    async with ctx.db.transaction() as s:
        cfg = await service.config_of(s, workspace_id=ctx.workspace_id)
        ws = await _workspace(s, ctx.workspace_id)
    if cfg is None:
        raise Problem(404, "Single sign-on is not set up for this workspace.")
    return _out(ctx, cfg, ws)


@router.op("PUT", "/sso", body=SsoIn, response=SsoOut, role="admin")
async def put_sso(ctx: Ctx[SsoIn]) -> SsoOut:
    """Set the workspace's OpenID Connect provider; its discovery document is fetched to check it."""
    b: SsoIn = ctx.body
    allow_private = bool(ctx.services.settings.allow_private_endpoints)
    why = service.issuer_problem(b.issuer, allow_private=allow_private)
    if why is not None:
        raise Problem(422, "The request is not valid.", errors=[{"field": "issuer", "message": why}])
    try:
        await ctx.services.sso.discover(b.issuer)
    except ValueError as exc:
        raise Problem(
            422, "The request is not valid.", errors=[{"field": "issuer", "message": str(exc)}]
        ) from None
    values = b.model_dump()
    values["default_role"] = b.default_role.value if b.default_role else None
    values["role_map"] = {k: v.value for k, v in b.role_map.items()}
    async with ctx.db.transaction() as s:
        stored = await service.config_of(s, workspace_id=ctx.workspace_id)
        if b.client_secret is None and (stored is None or not stored.client_secret):
            raise Problem(
                422, "The request is not valid.", errors=[{"field": "client_secret", "message": "required"}]
            )
        cfg = await service.save_config(s, workspace_id=ctx.workspace_id, values=values)
        ws = await _workspace(s, ctx.workspace_id)
        sent = sorted(k for k, v in values.items() if v is not None)  # names only: never the secret
        audit.record_for(
            s, ctx, action="sso.updated", target="sso", details={"fields": sent, "issuer": b.issuer}
        )
    return _out(ctx, cfg, ws)

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, field_validator
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from server.api import Ctx, Out, Page, Router, Schema, json_response, parse_model, read_json
from server.audit import service as audit
from server.auth import service, signin_limits
from server.auth.models import Role, User
from server.auth.principal import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE
from server.auth.tokens import AccessClaims
from server.errors import Problem
from server.pagination import PageQuery, decode_cursor, page_of
from server.ratelimit_middleware import too_many
from server.sessions import service as sessions
from server.sso import service as sso_service
from server.state import services_of
from server.validators import normalize_email

router = Router(tag="auth")

BAD_CREDENTIALS = "The email or password is not right."


class LoginIn(Schema):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(Schema):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutIn(Schema):
    refresh_token: str | None = Field(default=None, max_length=200)


class TokenPair(Out):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str


class UserOut(Out):
    id: int
    workspace_id: int
    email: str
    name: str
    role: Role


class UserIn(Schema):
    email: str = Field(max_length=320)
    password: str = Field(min_length=8, max_length=1024)
    name: str = Field(default="", max_length=200)
    role: Role = Role.agent

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return normalize_email(v)


def _pair_response(request: Request, user: User, refresh: str, family_id: str) -> Response:
    services = services_of(request.app)
    settings = services.settings
    access = services.tokens.issue(AccessClaims(user.id, user.workspace_id, user.role, session_id=family_id))
    pair = TokenPair(access_token=access, expires_in=settings.access_token_ttl_s, refresh_token=refresh)
    response = json_response(pair)
    set_session_cookies(response, settings, access=access, refresh=refresh)
    return response


def set_session_cookies(response: Response, settings: object, *, access: str, refresh: str) -> None:
    secure = bool(getattr(settings, "cookie_secure", False))
    ttl = int(getattr(settings, "refresh_token_ttl_s", 0))
    response.set_cookie(
        ACCESS_COOKIE, access, httponly=True, samesite="lax", secure=secure, path="/", max_age=ttl
    )
    response.set_cookie(
        REFRESH_COOKIE, refresh, httponly=True, samesite="strict", secure=secure, path="/", max_age=ttl
    )
    # Double-submit CSRF token: readable by our own scripts, sent back in X-CSRF-Token or a form field.
    response.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(24), httponly=False, samesite="strict", secure=secure, path="/"
    )


def clear_session_cookies(response: Response) -> None:
    for name in (ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/")


@router.op(
    "POST", "/auth/login", body=LoginIn, response=TokenPair, role=None, responses={401: "bad credentials"}
)
async def login(ctx: Ctx[LoginIn]) -> Response:
    """Exchange email and password for an access and a refresh token (and session cookies)."""
    settings = ctx.services.settings
    who = {"email": ctx.body.email, "address": signin_limits.client_address(ctx.request)}
    refused = await signin_limits.refusal(ctx.services, **who)
    if refused is not None:
        raise too_many(refused, "failed sign-ins from this address")
    device = sessions.Device.of(ctx.request)
    async with ctx.db.transaction() as s:
        try:
            user = await service.check_credentials(s, email=ctx.body.email, password=ctx.body.password)
        except service.AuthError:
            user = None
        if user is not None:
            sso_only = await sso_service.password_login_refusal(s, user=user)
            if sso_only is not None:
                raise Problem(403, sso_only)
            family = service.new_family_id()
            refresh = await service.issue_refresh(
                s,
                user_id=user.id,
                ttl_s=settings.refresh_token_ttl_s,
                family_id=family,
                user_agent=device.user_agent,
                ip=device.ip,
            )
            sessions.record_sign_in(s, user=user, device=device)
    if user is None:
        await signin_limits.record_failure(ctx.services, **who)
        await sessions.record_failed_sign_in(ctx.db, email=ctx.body.email, device=device)
        raise Problem(401, BAD_CREDENTIALS)
    return _pair_response(ctx.request, user, refresh, family)


@router.op("POST", "/auth/refresh", body=RefreshIn, response=TokenPair, role=None, responses={401: "invalid"})
async def refresh(ctx: Ctx[RefreshIn]) -> Response:
    """Spend a refresh token for a new pair. Reusing a spent token revokes its whole family."""
    settings = ctx.services.settings
    reused: str | None = None
    async with ctx.db.transaction() as s:
        try:
            device = sessions.Device.of(ctx.request)
            issued = await service.rotate_refresh(
                s,
                token=ctx.body.refresh_token,
                ttl_s=settings.refresh_token_ttl_s,
                user_agent=device.user_agent,
                ip=device.ip,
            )
        except service.RefreshReused as exc:
            issued, reused = None, exc.family_id  # caught inside, so the family's revocation is committed
        except service.AuthError:
            issued = None
    if reused is not None:
        await ctx.services.access_ended(session_ids=[reused])
    if issued is None:
        raise Problem(401, "The refresh token is invalid, expired or already used.")
    return _pair_response(ctx.request, issued.user, issued.token, issued.family_id)


@router.op("POST", "/auth/logout", body=None, status=204, role=None)
async def logout(ctx: Ctx[None]) -> Response:
    """Revoke the refresh token (from the body or the cookie) and clear the session cookies."""
    token: str | None = None
    raw = await ctx.request.body()
    if raw:
        token = parse_model(LogoutIn, await read_json(ctx.request)).refresh_token
    token = token or ctx.request.cookies.get(REFRESH_COOKIE)
    if token:
        async with ctx.db.transaction() as s:
            family = await service.revoke_token(s, token=token)
        if family is not None:
            await ctx.services.access_ended(session_ids=[family])
    response = Response(status_code=204)
    clear_session_cookies(response)
    return response


@router.op("GET", "/me", response=UserOut)
async def me(ctx: Ctx[None]) -> UserOut:
    """The signed-in user."""
    if ctx.principal.api_key_id is not None:
        raise Problem(403, "An API key acts for the workspace, not as a user; there is no /me for it.")
    async with ctx.db.transaction() as s:
        user = await s.get(User, ctx.principal.user_id)
    if user is None or user.workspace_id != ctx.workspace_id:
        raise Problem(401, "This user no longer exists.")
    return UserOut.model_validate(user)


@router.op("GET", "/users", query=PageQuery, response=Page[UserOut], role="admin")
async def list_users(ctx: Ctx[None]) -> Page[UserOut]:
    """Users of the workspace (admin)."""
    q: PageQuery = ctx.query
    after = decode_cursor(q.cursor)
    async with ctx.db.transaction() as s:
        stmt = select(User).where(User.workspace_id == ctx.workspace_id)
        if after is not None:
            stmt = stmt.where(User.id > after)
        users = list((await s.execute(stmt.order_by(User.id).limit(q.limit + 1))).scalars())
    return page_of(users, q.limit, UserOut.model_validate, Page[UserOut])


@router.op(
    "POST",
    "/users",
    body=UserIn,
    response=UserOut,
    status=201,
    role="admin",
    responses={409: "taken in this workspace"},
)
async def create_user(ctx: Ctx[UserIn]) -> UserOut:
    """Add a user to the workspace (admin)."""
    b: UserIn = ctx.body
    try:
        async with ctx.db.transaction() as s:
            user = await service.create_user(
                s,
                workspace_id=ctx.workspace_id,
                email=str(b.email),
                password=b.password,
                role=b.role,
                name=b.name,
            )
            audit.record(
                s,
                workspace_id=ctx.workspace_id,
                actor=audit.actor_of(ctx.principal),
                action="user.created",
                target=f"user:{user.id}",
                ip=audit.client_ip(ctx.request),
                details={"email": user.email, "role": user.role},
            )
    except service.DuplicateEmail:
        async with ctx.db.transaction() as s:
            ours = await service.find_user_by_email(s, email=str(b.email))
        if ours is not None and ours.workspace_id == ctx.workspace_id:
            raise Problem(
                409,
                "A user with this email already exists in this workspace.",
                errors=[{"field": "email", "message": "taken"}],
            ) from None
        # Emails are unique across the deployment; whether another workspace has this one is not
        # this admin's business (docs/decisions.md).
        raise Problem(
            422,
            "This email address cannot be used for a new user.",
            errors=[{"field": "email", "message": "cannot be used"}],
        ) from None
    return UserOut.model_validate(user)


class UserPatch(Schema):
    role: Role | None = None
    is_active: bool | None = None
    name: str | None = Field(default=None, max_length=200)


class UserFullOut(UserOut):
    is_active: bool


@router.op(
    "PATCH",
    "/users/{user_id}",
    body=UserPatch,
    response=UserFullOut,
    role="admin",
    responses={404: "not found", 422: "not on yourself"},
)
async def patch_user(ctx: Ctx[UserPatch]) -> UserFullOut:
    """Change a user's role, name, or deactivate them (admin). Deactivation ends their sessions."""
    b: UserPatch = ctx.body
    user_id = ctx.path_int("user_id")
    if user_id == ctx.principal.by_user and (b.role not in (None, Role.admin) or b.is_active is False):
        raise Problem(422, "Admins cannot demote or deactivate themselves; ask another admin.")
    actor, ip = audit.actor_of(ctx.principal), audit.client_ip(ctx.request)
    async with ctx.db.transaction() as s:
        user = await s.get(User, user_id)
        if user is None or user.workspace_id != ctx.workspace_id:
            raise Problem(404, "No such user.")
        target = f"user:{user.id}"
        if b.name is not None:
            user.name = b.name
        if b.role is not None and b.role.value != user.role:
            details = {"from": user.role, "to": b.role.value}
            user.role = b.role.value
            audit.record(
                s,
                workspace_id=ctx.workspace_id,
                actor=actor,
                action="user.role_changed",
                target=target,
                ip=ip,
                details=details,
            )
        if b.is_active is not None and b.is_active != user.is_active:
            user.is_active = b.is_active
            if not b.is_active:
                await sessions.revoke_sessions(s, user_id=user.id)
            action = "user.reactivated" if b.is_active else "user.deactivated"
            audit.record(s, workspace_id=ctx.workspace_id, actor=actor, action=action, target=target, ip=ip)
    if not user.is_active:
        await ctx.services.access_ended(user_id=user.id)
    return UserFullOut.model_validate(user)

"""Single sign-on rules: the workspace's settings, which issuers may be used, and who a verified
ID token signs in as (just-in-time provisioning, the role mapping, the refusals)."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth import service as auth_service
from server.auth.models import Role, User
from server.db import utcnow
from server.endpoints.guard import refused_host
from server.sso.models import SsoConfig, SsoIdentity
from server.workspaces.models import Workspace

# A DNS name as `allowed_domains` holds it: lower-case labels, a dot, a top-level label.
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class SsoRefused(Exception):
    """A sign-in that must not happen, with the status and the sentence the person is shown."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def issuer_problem(issuer: str, *, allow_private: bool) -> str | None:
    """Why this issuer URL is refused, or None. HTTPS always; plain HTTP only for a provider on this
    machine (loopback) and only when private addresses are allowed (the tests' provider)."""
    parts = urlsplit(issuer)
    host = (parts.hostname or "").lower()
    if not host or parts.query or parts.fragment or parts.username or parts.password:
        return "The issuer must be a plain https:// URL (no query, fragment or credentials)."
    if parts.scheme == "http":
        if not (allow_private and _is_loopback(host)):
            return (
                "The issuer must use https:// (http:// only for a provider on this machine in development)."
            )
    elif parts.scheme != "https":
        return "The issuer must use https://."
    if not allow_private:
        return refused_host(issuer)
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


async def config_of(session: AsyncSession, *, workspace_id: int) -> SsoConfig | None:
    q = select(SsoConfig).where(SsoConfig.workspace_id == workspace_id)
    return (await session.execute(q)).scalar_one_or_none()


async def config_by_slug(session: AsyncSession, *, slug: str) -> tuple[Workspace, SsoConfig] | None:
    q = select(Workspace, SsoConfig).join(SsoConfig, SsoConfig.workspace_id == Workspace.id)
    row = (await session.execute(q.where(Workspace.slug == slug.lower()))).first()
    return None if row is None else (row[0], row[1])


def email_domain(email: str) -> str | None:
    """The domain of an email address as `allowed_domains` would hold it, or None if it has none."""
    local, at, domain = email.strip().rpartition("@")
    domain = domain.lower()
    return domain if at and local and DOMAIN.match(domain) else None


async def configs_for_domain(session: AsyncSession, *, domain: str) -> list[tuple[Workspace, SsoConfig]]:
    """Every workspace whose single sign-on allows `domain` (exact, case-insensitive): the login
    page's "Continue with SSO" goes to the one, and refuses to choose between several."""
    domain = domain.lower()
    # Both databases keep the list as JSON text (`["acme.test", …]`): a quoted match there finds
    # the few candidates without a dialect's JSON functions; the exact rule is applied below.
    candidates = cast(SsoConfig.allowed_domains, Text).icontains(f'"{domain}"', autoescape=True)
    q = select(Workspace, SsoConfig).join(SsoConfig, SsoConfig.workspace_id == Workspace.id)
    rows = (await session.execute(q.where(candidates).order_by(Workspace.id))).all()
    return [(w, c) for w, c in rows if domain in {d.lower() for d in c.allowed_domains}]


async def save_config(session: AsyncSession, *, workspace_id: int, values: dict[str, Any]) -> SsoConfig:
    """Create or replace the workspace's settings. A missing `client_secret` keeps the stored one."""
    cfg = await config_of(session, workspace_id=workspace_id)
    if cfg is None:
        cfg = SsoConfig(workspace_id=workspace_id)
        session.add(cfg)
    for key, value in values.items():
        if key == "client_secret" and value is None:
            continue
        setattr(cfg, key, value)
    cfg.updated_at = utcnow()  # also names the authlib registration: a change builds a new client
    await session.flush()
    return cfg


async def password_login_refusal(session: AsyncSession, *, user: User) -> str | None:
    """Why this user may not sign in with a password (their workspace signs in through its
    provider only), or None."""
    cfg = await config_of(session, workspace_id=user.workspace_id)
    if cfg is None or cfg.password_login:
        return None
    return f"This workspace signs in with {cfg.display_name} only; use “Sign in with {cfg.display_name}”."


def mapped_role(cfg: SsoConfig, claims: dict[str, Any]) -> Role | None:
    """The highest role any value of the role claim maps to, else the default role (None: refuse)."""
    raw = claims.get(cfg.role_claim)
    values: Iterable[Any] = raw if isinstance(raw, list) else ([raw] if raw is not None else [])
    roles = [Role(cfg.role_map[v]) for v in values if isinstance(v, str) and v in cfg.role_map]
    if roles:
        return max(roles, key=lambda r: r.rank)
    return Role(cfg.default_role) if cfg.default_role else None


@dataclass(frozen=True, slots=True)
class Verified:
    """What a checked ID token says about the person."""

    subject: str
    email: str
    email_verified: bool
    name: str


def verified_claims(cfg: SsoConfig, claims: dict[str, Any]) -> Verified:
    sub, email = claims.get("sub"), claims.get("email")
    if not isinstance(sub, str) or not sub or not isinstance(email, str) or "@" not in email:
        raise SsoRefused(401, f"{cfg.display_name} did not tell us your email address.")
    verified = claims.get("email_verified") in (True, "true")
    if cfg.require_verified_email and not verified:
        raise SsoRefused(403, f"Your email address {email} is not verified at {cfg.display_name}.")
    domain = email.rsplit("@", 1)[1].lower()
    if domain not in {d.lower() for d in cfg.allowed_domains}:
        raise SsoRefused(403, f"Accounts of {domain} may not sign in to this workspace.")
    name = claims.get("name")
    return Verified(sub, email.strip(), verified, name if isinstance(name, str) else "")


async def sign_in(session: AsyncSession, *, cfg: SsoConfig, claims: dict[str, Any]) -> User:
    """The user these (verified) ID token claims sign in as: found by the provider account, else
    linked by a verified email, else created (just in time). The role follows the mapping at each
    sign-in. Raises SsoRefused."""
    who = verified_claims(cfg, claims)
    role = mapped_role(cfg, claims)
    if role is None:
        raise SsoRefused(403, f"Your {cfg.display_name} account has no role in this workspace.")
    q = select(SsoIdentity, User).join(User, User.id == SsoIdentity.user_id)
    row = (
        await session.execute(q.where(SsoIdentity.issuer == cfg.issuer, SsoIdentity.subject == who.subject))
    ).first()
    if row is not None:
        identity, user = row[0], row[1]
        identity.last_login_at = utcnow()
    else:
        user = await _link_or_create(session, cfg=cfg, who=who, role=role)
        session.add(SsoIdentity(user_id=user.id, issuer=cfg.issuer, subject=who.subject))
    if user.workspace_id != cfg.workspace_id:
        raise SsoRefused(403, "This account belongs to another workspace.")
    if not user.is_active:
        raise SsoRefused(403, "This account is deactivated; ask an admin of your workspace.")
    user.role = role.value
    await session.flush()
    return user


async def _link_or_create(session: AsyncSession, *, cfg: SsoConfig, who: Verified, role: Role) -> User:
    user = await auth_service.find_user_by_email(session, email=who.email)
    if user is None:
        try:
            # A random password nobody knows: the account signs in through the provider.
            return await auth_service.create_user(
                session,
                workspace_id=cfg.workspace_id,
                email=who.email,
                password=secrets.token_urlsafe(32),
                role=role,
                name=who.name,
            )
        except auth_service.DuplicateEmail:
            raise SsoRefused(409, "This account was just created by another sign-in; try again.") from None
    if user.workspace_id != cfg.workspace_id:
        raise SsoRefused(403, "This email address belongs to another workspace.")
    if not who.email_verified:
        # Linking an existing account on an unverified address would hand it to whoever typed it.
        raise SsoRefused(
            403, f"An account with {who.email} exists; sign in with a verified email to link it."
        )
    return user

"""authlib's Starlette client, one registration per workspace: the process's `services.sso`."""

from __future__ import annotations

import warnings
from typing import Any

import httpx

from server.endpoints.guard import public_only_transport
from server.sso import service
from server.sso.models import SsoConfig

with warnings.catch_warnings():
    # authlib 1.9 prefers the `httpx2` fork and warns when it runs on httpx; we stay on httpx,
    # which the outgoing-connection guard (server/endpoints/guard.py) plugs into.
    # (authlib.deprecate installs its own "always" filter when imported: ours goes in front of it.)
    import authlib.deprecate  # noqa: F401

    warnings.filterwarnings("ignore", message="The httpx module is deprecated", category=DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App

__all__ = ["OAuthError", "SsoClients"]

SCOPE = "openid email profile"
HTTP_TIMEOUT_S = 10.0


class _GuardedClient(AsyncOAuth2Client):
    """authlib's httpx client, connecting to public addresses only unless told otherwise. authlib
    makes one per request and closes it, so each gets its own guarded transport."""

    def __init__(self, *args: Any, public_only: bool = True, **kwargs: Any) -> None:
        if public_only:
            kwargs["transport"] = public_only_transport()
        super().__init__(*args, **kwargs)


class _GuardedApp(StarletteOAuth2App):
    client_cls = _GuardedClient


class SsoClients:
    """One authlib registration per workspace, built from its stored settings. The registration is
    named after the settings' `updated_at`, so saving new settings builds a new client (and fetches
    discovery and keys again) on every instance, while unchanged settings keep their cached JWKS."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.oauth = OAuth()

    def client(self, cfg: SsoConfig) -> StarletteOAuth2App:
        name = f"ws{cfg.workspace_id}-{int(cfg.updated_at.timestamp() * 1_000_000)}"
        app = self.oauth.create_client(name)
        if app is None:
            app = self.oauth.register(
                name,
                client_cls=_GuardedApp,
                client_id=cfg.client_id,
                client_secret=cfg.client_secret,
                server_metadata_url=service.discovery_url(cfg.issuer),
                client_kwargs={
                    "scope": SCOPE,
                    "code_challenge_method": "S256",
                    "timeout": HTTP_TIMEOUT_S,
                    "public_only": not self.allow_private,
                },
            )
        return app

    async def discover(self, issuer: str) -> dict[str, Any]:
        """The provider's discovery document, fetched through the guard; ValueError says what is wrong."""
        transport = None if self.allow_private else public_only_transport()
        try:
            async with httpx.AsyncClient(transport=transport, timeout=HTTP_TIMEOUT_S) as http:
                r = await http.get(service.discovery_url(issuer))
        except httpx.HTTPError as exc:
            raise ValueError(f"cannot fetch the discovery document: {exc}") from None
        if r.status_code != 200:
            raise ValueError(f"the discovery document answered HTTP {r.status_code}")
        try:
            doc = r.json()
        except ValueError:
            raise ValueError("the discovery document is not JSON") from None
        if not isinstance(doc, dict) or doc.get("issuer") != issuer:
            raise ValueError("the discovery document names another issuer (OpenID Discovery §4.3)")
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
        if missing:
            raise ValueError(f"the discovery document lacks {', '.join(missing)}")
        return doc

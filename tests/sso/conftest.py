"""A real OpenID Connect provider (the npm package oidc-provider, tests/sso/provider/) started with
`node` on a free 127.0.0.1 port, its users in a JSON file the tests rewrite, stopped by pid; and
an httpx driver for the whole redirect dance (the provider's own login and consent forms)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from server.settings import Settings
from tests.conftest import REQUIRE_SERVICES, make_settings
from tests.ui.conftest import browser_client  # noqa: F401 - a fixture for these tests too

PROVIDER_DIR = Path(__file__).resolve().parent / "provider"
APP_URL = "http://testserver"
CLIENT_ID = "switchboard"
CLIENT_SECRET = "switchboard-test-secret"

USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@acme.test",
        "email_verified": True,
        "name": "Alice Admin",
        "groups": ["admins"],
    },
    "bob": {"email": "bob@acme.test", "email_verified": True, "name": "Bob", "groups": ["staff"]},
    "vic": {"email": "vic@acme.test", "email_verified": True, "name": "Vic Viewer", "groups": []},
    "carol": {"email": "carol@acme.test", "email_verified": False, "name": "Carol", "groups": ["staff"]},
    "dave": {"email": "dave@other.test", "email_verified": True, "name": "Dave", "groups": ["admins"]},
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IdP:
    """One oidc-provider process. Every start makes a new signing key: `restart()` rotates keys."""

    def __init__(self, workdir: Path, redirect_uris: list[str]) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uris = redirect_uris
        self.state_file = workdir / "idp-state.json"
        self.log_file = workdir / "idp.log"
        self.state: dict[str, Any] = {"users": copy.deepcopy(USERS), "mischief": None}
        self.proc: subprocess.Popen[bytes] | None = None
        self.write()

    def write(self) -> None:
        self.state_file.write_text(json.dumps(self.state))

    def set_user(self, login: str, **claims: Any) -> None:
        self.state["users"][login].update(claims)
        self.write()

    def mischief(self, kind: str | None) -> None:
        self.state["mischief"] = kind
        self.write()

    def start(self) -> None:
        env = {
            **os.environ,
            "PORT": str(self.port),
            "REDIRECT_URIS": ",".join(self.redirect_uris),
            "STATE_FILE": str(self.state_file),
        }
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(PROVIDER_DIR / "provider.js")], cwd=PROVIDER_DIR, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the provider exited: {self.log_file.read_text()}")
            try:
                if httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the provider did not start: {self.log_file.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kid(self) -> str:
        keys = httpx.get(self.issuer + "/jwks", timeout=5).json()["keys"]
        return str(keys[0]["kid"])


def start_idp(workdir: Path, redirect_uris: list[str]) -> IdP:
    if shutil.which("node") is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").exists():
        why = "node or tests/sso/provider/node_modules is missing: npm ci --prefix tests/sso/provider"
        if REQUIRE_SERVICES:
            pytest.fail(why)
        pytest.skip(why)
    idp = IdP(workdir, redirect_uris)
    idp.start()
    return idp


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdP]:
    provider = start_idp(tmp_path, [APP_URL + "/sso/callback"])
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url, public_url=APP_URL)


def sso_settings(idp: IdP, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "display_name": "Acme ID",
        "issuer": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "allowed_domains": ["acme.test"],
        "role_claim": "groups",
        "role_map": {"admins": "admin", "staff": "agent"},
        "default_role": "viewer",
    }
    body.update(overrides)
    return body


async def configure(admin: httpx.AsyncClient, idp: IdP, **overrides: Any) -> dict[str, Any]:
    r = await admin.put("/api/v1/sso", json=sso_settings(idp, **overrides))
    assert r.status_code == 200, r.text
    return dict(r.json())


class Dance:
    """The redirect dance without a browser: our app through ASGI, the provider over the network."""

    def __init__(self, app: Any) -> None:
        self._asgi = app
        self.app = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL)
        self.provider = httpx.AsyncClient(timeout=10)
        self._others: list[Dance] = []

    def another(self) -> Dance:
        """A new browser (no cookies at our app or at the provider), closed with this one."""
        other = Dance(self._asgi)
        self._others.append(other)
        return other

    async def aclose(self) -> None:
        for other in self._others:
            await other.aclose()
        await self.app.aclose()
        await self.provider.aclose()

    async def start(self, slug: str = "acme", next_url: str = "/") -> str:
        """Our login route; returns the provider's authorization URL."""
        r = await self.app.get(f"/sso/{slug}/login", params={"next": next_url})
        assert r.status_code == 302, r.text
        return r.headers["location"]

    async def at_provider(self, url: str, login: str) -> str:
        """Sign in at the provider as `login` and consent; returns our callback URL (with the code)."""
        for _ in range(12):
            if url.startswith(APP_URL):
                return url
            r = await self.provider.get(url)
            if r.is_redirect:
                url = urljoin(url, r.headers["location"])
                continue
            assert r.status_code == 200, r.text
            action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
            assert action, r.text
            if 'name="prompt" value="login"' in r.text:
                data = {"prompt": "login", "login": login, "password": "any"}
            else:
                data = {"prompt": "consent"}
            r = await self.provider.post(urljoin(url, action.group(1)), data=data)
            assert r.is_redirect, r.text
            url = urljoin(url, r.headers["location"])
        raise AssertionError("the provider never redirected back")

    async def finish(self, callback_url: str) -> httpx.Response:
        parts = urlsplit(callback_url)
        return await self.app.get(parts.path + "?" + parts.query)

    async def sign_in(self, login: str, slug: str = "acme") -> httpx.Response:
        return await self.finish(await self.at_provider(await self.start(slug), login))


@pytest.fixture
async def dance(app: Any) -> AsyncIterator[Dance]:
    d = Dance(app)
    try:
        yield d
    finally:
        await d.aclose()

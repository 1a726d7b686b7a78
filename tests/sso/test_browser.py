"""The whole redirect dance in Debian's chromium: our login page, the provider's login and consent
pages, back to the board, signed in with the role the provider's groups map to."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from server.auth import service as auth_service
from server.auth.models import Role, User
from server.db import Database
from tests.browser.conftest import DESKTOP, HAVE_CHROMIUM, build_app, free_port
from tests.browser.conftest import browser as browser  # the fixture, for these tests too
from tests.conftest import PASSWORD, make_settings
from tests.sso.conftest import IdP, sso_settings, start_idp

pytestmark = pytest.mark.browser


class Site:
    def __init__(self, url: str, db: Database, idp: IdP) -> None:
        self.url, self.db, self.idp = url, db, idp

    async def role_of(self, email: str) -> str:
        async with self.db.transaction() as s:
            return str((await s.execute(select(User.role).where(User.email == email))).scalar_one())


@pytest.fixture
async def site(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Site]:
    if not HAVE_CHROMIUM:
        pytest.skip("chromium is missing: apt-get install -y chromium")
    path = tmp_path / "switchboard.db"
    shutil.copy(sqlite_template, path)
    db_url = f"sqlite+aiosqlite:///{path}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    idp = start_idp(tmp_path, [url + "/sso/callback"])
    app = build_app(make_settings(db_url, public_url=url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    db = Database(db_url)
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        async with db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            await auth_service.create_user(
                s, workspace_id=ws.id, email="root@acme.test", password=PASSWORD, role=Role.admin
            )
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/api/v1/auth/login", json={"email": "root@acme.test", "password": PASSWORD})
            token = r.json()["access_token"]
            r = await c.put(
                "/api/v1/sso", json=sso_settings(idp), headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200, r.text
        yield Site(url, db, idp)
    finally:
        await db.dispose()
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        idp.stop()


async def _sign_in_with_provider(chromium: Any, site: Site, login: str) -> Any:
    context = await chromium.new_context(viewport=DESKTOP, base_url=site.url)
    await context.route_web_socket("**/ws*", lambda ws: None)  # the board's live socket is not under test
    page = await context.new_page()
    await page.goto("/login?workspace=acme")
    await page.get_by_role("link", name="Sign in with Acme ID").click()
    await page.wait_for_url(site.idp.issuer + "/interaction/**")
    await page.locator('input[name="login"]').fill(login)
    await page.locator('input[name="password"]').fill("any")
    await page.get_by_role("button", name="Sign-in").click()
    await page.get_by_role("button", name="Continue").click()  # the provider's consent page
    await page.wait_for_url(site.url + "/")
    return page


async def test_sign_in_through_the_provider_in_a_real_browser(browser: Any, site: Site) -> None:
    # First sign-in: alice (group "admins") is created as an admin and lands on the board.
    page = await _sign_in_with_provider(browser, site, "alice")
    await page.get_by_text("Alice Admin").first.wait_for()
    assert await site.role_of("alice@acme.test") == "admin"
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert {"sb_access", "sb_refresh", "sb_csrf"} <= set(cookies)
    assert cookies["sb_access"]["httpOnly"] and "sb_sso" not in cookies
    await page.context.close()

    # A second user in no mapped group gets the default role.
    page = await _sign_in_with_provider(browser, site, "vic")
    assert await site.role_of("vic@acme.test") == "viewer"
    await page.context.close()

    # Removed from the group at the provider: the next sign-in follows.
    site.idp.set_user("alice", groups=[])
    page = await _sign_in_with_provider(browser, site, "alice")
    assert await site.role_of("alice@acme.test") == "viewer"
    await page.get_by_text("viewer").first.wait_for()
    await page.context.close()


async def test_continue_with_sso_by_email_domain_in_a_real_browser(browser: Any, site: Site) -> None:
    context = await browser.new_context(viewport=DESKTOP, base_url=site.url)
    await context.route_web_socket("**/ws*", lambda ws: None)  # the board's live socket is not under test
    page = await context.new_page()
    await page.goto("/login")
    # A domain without single sign-on: a readable answer on the login page.
    await page.get_by_label("Single sign-on: your work email").fill("zoe@example.org")
    await page.get_by_role("button", name="Continue with SSO").click()
    await page.get_by_text("There is no single sign-on for example.org.").wait_for()
    # The workspace's domain: its "Sign in with …", then the provider, then the board.
    await page.get_by_label("Single sign-on: your work email").fill("bob@acme.test")
    await page.get_by_role("button", name="Continue with SSO").click()
    await page.get_by_role("link", name="Sign in with Acme ID").click()
    await page.wait_for_url(site.idp.issuer + "/interaction/**")
    await page.locator('input[name="login"]').fill("bob")
    await page.locator('input[name="password"]').fill("any")
    await page.get_by_role("button", name="Sign-in").click()
    await page.get_by_role("button", name="Continue").click()  # the provider's consent page
    await page.wait_for_url(site.url + "/")
    await page.get_by_text("Bob").first.wait_for()
    assert await site.role_of("bob@acme.test") == "agent"
    await context.close()

"""A real server (uvicorn on 127.0.0.1, a free port, its own SQLite file) and Debian's chromium
driven by Playwright. Never downloads a browser: chromium comes from `apt-get install chromium`."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from server.db import Database
from tests.conftest import PASSWORD, make_settings

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_app(settings: Any) -> Any:
    """The app as `serve` builds it."""
    return create_app(settings)


@dataclass
class LiveServer:
    url: str
    db: Database
    paths: set[str]
    workspace_id: int = 0

    def needs(self, path: str) -> None:
        if path not in self.paths:
            pytest.skip(f"{path} is not in this tree yet")

    async def user(self, role: str = "agent", name: str = "") -> str:
        email = f"{role}-{uuid.uuid4().hex[:6]}@acme.test"
        async with self.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            self.workspace_id = ws.id
            await auth_service.create_user(
                s, workspace_id=ws.id, email=email, password=PASSWORD, role=Role(role), name=name
            )
        return email


@pytest.fixture
async def live_server(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[LiveServer]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    path = tmp_path / "switchboard.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite+aiosqlite:///{path}"
    settings = make_settings(url, presence_ttl_s=30.0, ws_ping_interval_s=5.0)
    port = free_port()
    app = build_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    db = Database(url)
    try:
        paths = {str(getattr(r, "path", "")) for r in app.router.routes}
        yield LiveServer(url=f"http://127.0.0.1:{port}", db=db, paths=paths)
    finally:
        await db.dispose()
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def sign_in(
    browser: Any,
    server: LiveServer,
    email: str,
    viewport: dict[str, int] = DESKTOP,
    ws_route: Callable[[Any], Any] | None = None,
) -> Any:
    """A new browser context (its own cookies) signed in as `email`; returns its page. `ws_route`
    handles the page's WebSockets (`context.route_web_socket`), e.g. to block them."""
    context = await browser.new_context(viewport=viewport, base_url=server.url)
    if ws_route is not None:
        await context.route_web_socket("**/ws*", ws_route)
    page = await context.new_page()
    page.on("dialog", lambda d: asyncio.ensure_future(d.dismiss()))
    await page.goto("/login")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(server.url + "/")
    return page


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

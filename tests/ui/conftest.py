"""A browser-like client: cookies from the login form, the CSRF token from its cookie."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from server.auth import service as auth_service
from server.auth.models import Role
from tests.conftest import PASSWORD

BrowserFactory = Callable[..., Awaitable[httpx.AsyncClient]]


def csrf_field(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field in the form"
    return m.group(1)


async def create_user(app: Any, role: str, workspace: str, name: str = "") -> str:
    email = f"{role}-{uuid.uuid4().hex[:8]}@{workspace.lower()}.test"
    async with app.state.services.db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name=workspace)
        await auth_service.create_user(
            s, workspace_id=ws.id, email=email, password=PASSWORD, role=Role(role), name=name
        )
    return email


async def sign_in(client: httpx.AsyncClient, email: str) -> httpx.Response:
    page = await client.get("/login")
    return await client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf_token": csrf_field(page.text), "next": "/"},
    )


@pytest.fixture
async def browser_client(app: Any) -> AsyncIterator[BrowserFactory]:
    """`await browser_client("agent")` → an httpx client signed in through the login form."""
    clients: list[httpx.AsyncClient] = []

    async def factory(role: str = "admin", workspace: str = "Acme", name: str = "") -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        clients.append(client)
        email = await create_user(app, role, workspace, name)
        r = await sign_in(client, email)
        assert r.status_code == 303, r.text
        client.headers["X-CSRF-Token"] = client.cookies["sb_csrf"]
        return client

    yield factory
    for c in clients:
        await c.aclose()

"""Apps with chosen settings (rate limits on, Redis or not) and signed-in clients for them."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from tests.conftest import PASSWORD, make_settings

AppFactory = Callable[..., Awaitable[Starlette]]


@pytest.fixture
async def make_app(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[AppFactory]:
    """`await make_app(db_url=None, **settings)`: an app with its lifespan running (SQLite by default)."""
    async with AsyncExitStack() as stack:

        async def factory(db_url: str | None = None, **overrides: Any) -> Starlette:
            if db_url is None:
                path = tmp_path / f"{uuid.uuid4().hex[:8]}.db"
                shutil.copy(sqlite_template, path)
                db_url = f"sqlite+aiosqlite:///{path}"
            app = create_app(make_settings(db_url, **overrides))
            await stack.enter_async_context(app.router.lifespan_context(app))
            app.state.test_clients = []

            async def close_clients() -> None:
                for c in app.state.test_clients:
                    await c.aclose()

            stack.push_async_callback(close_clients)
            return app

        yield factory


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"sbtest:ops:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def http_client(app: Starlette, *, ip: str = "127.0.0.1", raise_errors: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000), raise_app_exceptions=raise_errors)
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    app.state.test_clients.append(client)
    return client


async def add_user(app: Starlette, *, role: str = "admin", workspace: str = "Acme") -> str:
    email = f"{role}-{uuid.uuid4().hex[:8]}@{workspace.lower()}.test"
    async with app.state.services.db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name=workspace)
        await auth_service.create_user(s, workspace_id=ws.id, email=email, password=PASSWORD, role=Role(role))
    return email


async def sign_in(
    app: Starlette, *, role: str = "admin", workspace: str = "Acme", ip: str = "127.0.0.1"
) -> httpx.AsyncClient:
    email = await add_user(app, role=role, workspace=workspace)
    client = http_client(app, ip=ip)
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    client.cookies.clear()
    return client

"""Shared fixtures: a migrated database per test (SQLite always; PostgreSQL when reachable,
and required when SWITCHBOARD_TEST_REQUIRE_SERVICES=1), an app with its lifespan running,
and a factory of signed-in HTTP clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.config import Config

from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from server.db import Database
from server.models import Base
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("SWITCHBOARD_TEST_REQUIRE_SERVICES") == "1"
PG_HOST = os.environ.get("SWITCHBOARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SWITCHBOARD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SWITCHBOARD_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "correct horse battery staple"


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up (which may start its own event loop) off the test's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


async def until(check: Callable[[], Any], *, within: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def alembic_upgrade(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    in_thread(command.upgrade, cfg, "head")


def _unavailable(what: str, why: object) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (SWITCHBOARD_TEST_REQUIRE_SERVICES=1) but unreachable: {why}")
    pytest.skip(f"{what} unreachable: {why}")


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this run, migrated once, dropped at the end."""
    name = f"sb_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        in_thread(asyncio.run, _pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _unavailable("PostgreSQL", exc)
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    alembic_upgrade(url)
    yield url
    in_thread(asyncio.run, _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    alembic_upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def _truncate_pg(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean, migrated database URL: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "switchboard.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    await _truncate_pg(url)
    return url


@pytest.fixture
async def pg_url(pg_database: str) -> str:
    """A clean PostgreSQL database only (for tests of PostgreSQL-specific behaviour)."""
    await _truncate_pg(pg_database)
    return pg_database


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    finally:
        await client.aclose()
    yield REDIS_URL


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "secret_key": "test-secret-" + "x" * 32,
        "rate_limit_enabled": False,
        "allow_private_endpoints": True,  # receivers and fakes listen on 127.0.0.1
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def db(app: Any) -> Database:
    return app.state.services.db


ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(app: Any) -> AsyncIterator[ClientFactory]:
    """`await make_client(role="agent", workspace="Acme")` → an httpx client signed in as a new user."""
    clients: list[httpx.AsyncClient] = []

    async def factory(
        role: str | None = "admin", workspace: str = "Acme", email: str | None = None
    ) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        clients.append(client)
        if role is None:
            return client
        email = email or f"{role}-{uuid.uuid4().hex[:8]}@{workspace.lower()}.test"
        async with app.state.services.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name=workspace)
            await auth_service.create_user(
                s, workspace_id=ws.id, email=email, password=PASSWORD, role=Role(role)
            )
        r = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        client.cookies.clear()
        return client

    yield factory
    for c in clients:
        await c.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    """An admin of workspace "Acme"."""
    return await make_client("admin")

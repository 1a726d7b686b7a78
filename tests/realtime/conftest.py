"""Fixtures for the real-time layer: a database (SQLite, and PostgreSQL when reachable), a
redis-server of our own on a free port, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from realtime.service import Realtime
from realtime.types import OpBudget
from realtime.wsprotocol import WebSocketProtocol
from server.auth.models import User
from server.contacts.models import Contact
from server.db import Database
from server.events.log import SqlEventLog
from server.events.service import emit
from server.models import Base
from server.settings import Settings
from server.workspaces.models import Workspace

PG = os.environ.get("SWITCHBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Caller:
    user_id: int
    workspace_id: int


async def token_auth(conn: HTTPConnection) -> Caller:
    """Test stand-in for server.auth: the token is `<workspace id>:<user id>`."""
    token = conn.query_params.get("token") or conn.headers.get("authorization", "").removeprefix("Bearer ")
    try:
        ws, user = (int(p) for p in token.split(":"))
    except ValueError:
        raise HTTPException(401, "Sign in first") from None
    return Caller(user_id=user, workspace_id=ws)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str | None]:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    yield PG if asyncio.run(probe()) else None


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def make_database(kind: str, tmp: Path) -> tuple[Database, Callable[[], Awaitable[None]]]:
    if kind == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp / 'rt.db'}")
        drop = None
    else:
        name = f"sb_realtime_{uuid.uuid4().hex[:10]}"
        await _pg(f'CREATE DATABASE "{name}"')
        db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", pool_size=10, max_overflow=30)
        drop = name
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)

    async def close() -> None:
        await db.dispose()
        if drop:
            await _pg(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')

    return db, close


@pytest.fixture(params=["sqlite", "postgres"])
async def db(
    request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str | None
) -> AsyncIterator[Database]:
    if request.param == "postgres" and pg_admin_url is None:
        pytest.skip("PostgreSQL unreachable")
    database, close = await make_database(request.param, tmp_path)
    yield database
    await close()


@pytest.fixture
async def pg_db(tmp_path: Path, pg_admin_url: str | None) -> AsyncIterator[Database]:
    if pg_admin_url is None:
        pytest.skip("PostgreSQL unreachable")
    database, close = await make_database("postgres", tmp_path)
    yield database
    await close()


class RedisServer:
    """A redis-server of our own (no persistence) that a test may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sb-rt-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                import time

                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


def make_settings(db: Database, redis_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": db.url,
        "redis_url": redis_url,
        "secret_key": "x" * 40,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Running:
    rt: Realtime
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, workspace_id: int, user_id: int) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={workspace_id}:{user_id}"


@asynccontextmanager
async def uvicorn_on_free_port(app: Any, **config: Any) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    """`app` on a real uvicorn server in this loop, with `switchboard serve`'s WebSocket protocol."""
    port = free_port()
    options: dict[str, Any] = {
        "log_level": "warning",
        "ws_ping_interval": None,
        "ws": WebSocketProtocol,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield port, server
    finally:
        server.should_exit = True
        server.force_exit = True  # do not wait for the sockets a test left open
        await asyncio.wait_for(task, 10)
        # A forced exit skips the app's lifespan shutdown: run it, so the app's services stop (their
        # tasks, their database pool) in this test's loop, not when the garbage collector finds
        # them after the loop closed (an unraisable warning in whatever test runs then).
        await asyncio.wait_for(server.lifespan.shutdown(), 10)


@asynccontextmanager
async def serve(rt: Realtime) -> AsyncIterator[Running]:
    """The realtime routes on a real uvicorn server (so the raw-transport path is exercised)."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    # /ws served in front of the app (Realtime.wrap), as `switchboard serve` is meant to;
    # test_asgi_fallback covers the route mounted inside Starlette.
    app = rt.wrap(Starlette(routes=rt.routes, lifespan=lifespan))
    async with uvicorn_on_free_port(app, ws_max_size=rt.settings.ws_max_message_bytes) as (port, _server):
        yield Running(rt, port)


StartApp = Callable[..., Any]


@pytest.fixture
async def start_app(db: Database) -> AsyncIterator[Callable[..., Any]]:
    """`async with start_app(redis_url=..., **settings) as app:` → a Running server."""

    def factory(
        *,
        database: Database | None = None,
        redis_url: str | None = None,
        relay: bool = True,
        op_budget: OpBudget | None = None,
        **overrides: Any,
    ) -> Any:
        database = database or db
        prefix = overrides.pop("prefix", f"sbt{uuid.uuid4().hex[:6]}:")
        settings = make_settings(database, redis_url, **overrides)
        rt = Realtime(
            settings,
            database,
            authenticate=token_auth,
            log=SqlEventLog(),
            prefix=prefix,
            relay=relay,
            op_budget=op_budget,
        )
        return serve(rt)

    yield factory


@dataclass
class Seed:
    ws: int
    other_ws: int
    user: int
    other_user: int
    contact: int
    other_contact: int


async def seed(db: Database) -> Seed:
    async with db.transaction() as s:
        a = Workspace(name=f"A{uuid.uuid4().hex[:6]}")
        b = Workspace(name=f"B{uuid.uuid4().hex[:6]}")
        s.add_all([a, b])
        await s.flush()
        ua = User(workspace_id=a.id, email=f"{uuid.uuid4().hex[:6]}@a.test", name="Ada", password_hash="x")
        ub = User(workspace_id=b.id, email=f"{uuid.uuid4().hex[:6]}@b.test", name="Bob", password_hash="x")
        ca = Contact(workspace_id=a.id, name="Carol")
        cb = Contact(workspace_id=b.id, name="Dan")
        s.add_all([ua, ub, ca, cb])
        await s.flush()
        return Seed(a.id, b.id, ua.id, ub.id, ca.id, cb.id)


async def write(
    db: Database,
    workspace_id: int,
    n: int = 1,
    *,
    type: str = "message.status",
    contact_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> list[int]:
    """Commit `n` events (one transaction each); returns their ids."""
    ids = []
    for _ in range(n):
        async with db.transaction() as s:
            env = await emit(s, workspace_id, type, data or {"status": "sent"}, contact_id=contact_id)
        ids.append(env["id"])
    return ids

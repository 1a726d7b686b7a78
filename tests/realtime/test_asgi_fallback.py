"""Under a server whose transport we cannot reach (here Starlette's TestClient), frames go
through ASGI `send` from a bounded queue: same protocol, same guarantees."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` behind its TestClient; `httpx` still works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from realtime.service import Realtime
from server.db import Database
from server.events.log import SqlEventLog
from server.models import Base
from tests.realtime.conftest import make_settings, seed, token_auth, write


async def _prepare(url: str) -> tuple[int, int, list[int]]:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    s = await seed(db)
    ids = await write(db, s.ws, 3)
    await db.dispose()
    return s.ws, s.user, ids


async def _write(url: str, workspace_id: int) -> list[int]:
    db = Database(url)
    try:
        return await write(db, workspace_id, 2)
    finally:
        await db.dispose()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fallback.db'}"


def test_websocket_through_asgi_send_replays_then_streams(url: str) -> None:
    ws_id, user, ids = asyncio.run(_prepare(url))
    db = Database(url)
    rt = Realtime(make_settings(db), db, authenticate=token_auth, log=SqlEventLog())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.stop()
        await db.dispose()

    app = Starlette(routes=rt.routes, lifespan=lifespan)
    with TestClient(app) as client, client.websocket_connect(f"/ws?token={ws_id}:{user}") as ws:
        ws.send_json({"op": "subscribe", "topics": ["board"], "after": ids[0]})
        assert ws.receive_json() == {"type": "subscribed", "topics": ["board"]}
        assert [ws.receive_json()["id"] for _ in range(2)] == ids[1:]
        more = asyncio.run(_write(url, ws_id))
        assert [ws.receive_json()["id"] for _ in range(2)] == more
        ws.send_json({"op": "nonsense"})
        assert ws.receive_json()["type"] == "error"

"""A live socket, stream or long-poll ends with its caller's access: the real app and sign-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed

from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role, User
from server.db import Database
from server.settings import Settings
from tests.conftest import PASSWORD
from tests.realtime.clients import Client
from tests.realtime.conftest import uvicorn_on_free_port

RECHECK_S = 0.3


@dataclass
class Signed:
    port: int
    db: Database
    http: httpx.AsyncClient
    user_id: int
    access: str
    refresh: str

    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={self.access}"

    @property
    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access}"}


@asynccontextmanager
async def signed_in(settings: Settings) -> AsyncIterator[Signed]:
    """The app on a real server (as `switchboard serve` runs it), a user signed in by the API."""
    settings = settings.model_copy(update={"ws_access_recheck_s": RECHECK_S})
    app = create_app(settings)
    services = app.state.services
    async with services.db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name="Acme")
        user = await auth_service.create_user(
            s, workspace_id=ws.id, email="agent@acme.test", password=PASSWORD, role=Role.agent
        )
        user_id = user.id
    rt = services.realtime
    async with uvicorn_on_free_port(rt.wrap(app), ws_max_size=settings.ws_max_message_bytes) as (port, _s):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.post("/api/v1/auth/login", json={"email": "agent@acme.test", "password": PASSWORD})
            assert r.status_code == 200, r.text
            http.cookies.clear()
            body = r.json()
            yield Signed(port, services.db, http, user_id, body["access_token"], body["refresh_token"])


async def closed_code(c: Client, within_s: float) -> int:
    async with asyncio.timeout(within_s):
        try:
            while True:
                await c.conn.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code


async def deactivate(db: Database, user_id: int) -> None:
    async with db.transaction() as s:
        await s.execute(update(User).where(User.id == user_id).values(is_active=False))


async def test_logout_closes_an_open_socket_with_4401_within_the_recheck_interval(settings: Settings) -> None:
    async with signed_in(settings) as a:
        c = await Client.open(a.ws())
        assert (await c.subscribe(["board"], None))["type"] == "subscribed"
        assert await c.nothing_for(RECHECK_S * 3) == []  # re-checked, still signed in: stays open
        r = await a.http.post("/api/v1/auth/logout", json={"refresh_token": a.refresh})
        assert r.status_code == 204
        started = time.monotonic()
        assert await closed_code(c, within_s=RECHECK_S + 2) == 4401
        assert time.monotonic() - started < RECHECK_S + 2
        # The access token is still unexpired, but its sign-in is gone: a new socket is closed too.
        again = await Client.open(a.ws())
        assert await closed_code(again, within_s=2) == 4401


async def test_a_deactivated_users_sse_stream_ends(settings: Settings) -> None:
    async with signed_in(settings) as a:
        async with a.http.stream(
            "GET", "/api/v1/events/stream", params={"topics": "board"}, headers=a.bearer
        ) as r:
            assert r.status_code == 200
            chunks = r.aiter_text()
            assert "retry:" in await anext(chunks)
            await deactivate(a.db, a.user_id)
            received = ""
            async with asyncio.timeout(RECHECK_S + 5):
                async for chunk in chunks:  # ends when the server ends the stream
                    received += chunk
        assert "event: error" in received and "signed out" in received


async def test_a_deactivated_users_long_poll_answers_401(settings: Settings) -> None:
    async with signed_in(settings) as a:
        params = {"topics": "board", "timeout": 0}
        r = await a.http.get("/api/v1/events", params=params, headers=a.bearer)
        assert r.status_code == 200
        # A poll waiting when the user is deactivated answers 401 instead of events.
        waiting = asyncio.create_task(
            a.http.get("/api/v1/events", params={"topics": "board", "timeout": 1}, headers=a.bearer)
        )
        await asyncio.sleep(0.2)
        await deactivate(a.db, a.user_id)
        r = await waiting
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        r = await a.http.get("/api/v1/events", params=params, headers=a.bearer)
        assert r.status_code == 401


async def test_a_deactivated_users_socket_is_closed_with_4401(settings: Settings) -> None:
    async with signed_in(settings) as a:
        c = await Client.open(a.ws())
        assert (await c.subscribe(["board"], None))["type"] == "subscribed"
        await deactivate(a.db, a.user_id)
        assert await closed_code(c, within_s=RECHECK_S + 2) == 4401


async def test_a_frame_over_the_message_bound_is_closed_with_1009(settings: Settings) -> None:
    async with signed_in(settings) as a:
        c = await Client.open(a.ws())
        await c.conn.send("x" * (settings.ws_max_message_bytes + 1))
        assert await closed_code(c, within_s=5) == 1009

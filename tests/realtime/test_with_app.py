"""The real-time layer mounted in the real app, with the real sign-in (server.auth)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn
from websockets.exceptions import InvalidStatus

from realtime.service import Realtime
from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from server.settings import Settings
from tests.conftest import PASSWORD
from tests.realtime.clients import Client
from tests.realtime.conftest import free_port, write


async def test_a_signed_in_user_gets_events_over_ws_and_long_poll(settings: Settings) -> None:
    app = create_app(settings)
    services = app.state.services
    rt = services.realtime  # mounted by the app factory, signing in through server.auth
    assert isinstance(rt, Realtime)
    async with services.db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name="Acme")
        await auth_service.create_user(
            s, workspace_id=ws.id, email="agent@acme.test", password=PASSWORD, role=Role.agent
        )
        workspace_id = ws.id
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(rt.wrap(app), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.post("/api/v1/auth/login", json={"email": "agent@acme.test", "password": PASSWORD})
            token = r.json()["access_token"]
            cookie = f"sb_access={http.cookies['sb_access']}"
            http.cookies.clear()  # the browser cookies would sign us in too
            with pytest.raises(InvalidStatus):
                await Client.open(f"ws://127.0.0.1:{port}/ws?token=not-a-token")
            r = await http.get("/api/v1/events", params={"topics": "board", "timeout": 0})
            assert r.status_code == 401

            c = await Client.open(f"ws://127.0.0.1:{port}/ws?token={token}")
            assert (await c.subscribe(["board"], None))["type"] == "subscribed"
            # The browser's cookie works from our own pages, not from another site's.
            url = f"ws://127.0.0.1:{port}/ws"
            own = await Client.open(url, headers={"cookie": cookie, "origin": f"http://127.0.0.1:{port}"})
            assert (await own.subscribe(["board"], None))["type"] == "subscribed"
            await own.close()
            with pytest.raises(InvalidStatus):
                await Client.open(url, headers={"cookie": cookie, "origin": "https://evil.example"})
            [event_id] = await write(services.db, workspace_id, 1)
            assert [e["id"] for e in await c.events_until(event_id)] == [event_id]
            r = await http.get(
                "/api/v1/events",
                params={"topics": "board", "after": 0, "timeout": 0},
                headers={"authorization": f"Bearer {token}"},
            )
            assert r.json()["last_id"] == event_id
            await c.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)

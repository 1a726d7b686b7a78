"""A revocation ends the connections standing on it at once, on every instance: two apps on one
database and one Redis, the access re-check left at its 60 s default, so only the `access` note
carried by the hub's subscription can close anything in time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from server.db import Database
from server.settings import Settings
from tests.conftest import PASSWORD
from tests.realtime.clients import Client
from tests.realtime.conftest import uvicorn_on_free_port
from tests.realtime.test_live_access import closed_code

RECHECK_S = 60.0  # the fallback sweep: far beyond what the tests wait
WITHIN_S = 1.5  # a revocation reaches a socket on another instance well within this


@dataclass
class Instance:
    port: int
    http: httpx.AsyncClient

    def ws(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={token}"


@asynccontextmanager
async def instances(settings: Settings, count: int, **overrides: Any) -> AsyncIterator[list[Instance]]:
    """`count` apps on the test's database (and, when given, one Redis), each on a real server,
    their hubs listening."""
    settings = settings.model_copy(update={"ws_access_recheck_s": RECHECK_S, **overrides})
    async with AsyncExitStack() as stack:
        out: list[Instance] = []
        for _ in range(count):
            app = create_app(settings)
            rt = app.state.services.realtime
            port, _server = await stack.enter_async_context(
                uvicorn_on_free_port(rt.wrap(app), ws_max_size=settings.ws_max_message_bytes)
            )
            await asyncio.wait_for(app.state.services.caches.listening.wait(), 5)
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}"))
            out.append(Instance(port, http))
        yield out


@pytest.fixture
async def redis_settings(settings: Settings, redis_url: str) -> AsyncIterator[Settings]:
    import redis.asyncio as aioredis

    prefix = f"sbtest:revoke:{uuid.uuid4().hex[:8]}:"
    yield settings.model_copy(update={"redis_url": redis_url, "redis_prefix": prefix})
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def user(settings: Settings, role: Role) -> tuple[int, str]:
    """A user of workspace Acme, and their email."""
    db = Database(settings.database_url)
    email = f"{role.value}-{uuid.uuid4().hex[:6]}@acme.test"
    try:
        async with db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            made = await auth_service.create_user(
                s, workspace_id=ws.id, email=email, password=PASSWORD, role=role
            )
            return made.id, email
    finally:
        await db.dispose()


async def bearer(at: Instance, email: str) -> dict[str, str]:
    r = await at.http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    at.http.cookies.clear()
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def long_poll(at: Instance, headers: dict[str, str]) -> asyncio.Task[httpx.Response]:
    params = {"topics": "board", "timeout": 30}
    return asyncio.create_task(at.http.get("/api/v1/events", params=params, headers=headers, timeout=40))


async def subscribed(url: str) -> Client:
    c = await Client.open(url)
    assert (await c.subscribe(["board"], None))["type"] == "subscribed"
    return c


async def stream_ends_signed_out(at: Instance, headers: dict[str, str], opened: asyncio.Event) -> str:
    received = ""
    async with at.http.stream(
        "GET", "/api/v1/events/stream", params={"topics": "board"}, headers=headers, timeout=40
    ) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_text():
            received += chunk
            opened.set()
    return received


async def test_revoking_a_key_on_one_instance_closes_its_socket_stream_and_long_poll_on_another(
    redis_settings: Settings,
) -> None:
    _admin_id, admin_email = await user(redis_settings, Role.admin)
    async with instances(redis_settings, 2) as (a, b):
        admin = await bearer(a, admin_email)
        r = await a.http.post(
            "/api/v1/api-keys", json={"name": "feed", "scopes": ["events:read"]}, headers=admin
        )
        assert r.status_code == 201, r.text
        key_id, secret = r.json()["id"], r.json()["key"]
        other = (
            await a.http.post(
                "/api/v1/api-keys", json={"name": "other", "scopes": ["events:read"]}, headers=admin
            )
        ).json()["key"]
        key = {"authorization": f"Bearer {secret}"}

        socket = await subscribed(b.ws(secret))
        bystander = await subscribed(b.ws(other))
        waiting = long_poll(b, key)
        opened = asyncio.Event()
        streaming = asyncio.create_task(stream_ends_signed_out(b, key, opened))
        await asyncio.wait_for(opened.wait(), 5)
        await asyncio.sleep(0.2)  # the long-poll is waiting on B

        r = await a.http.delete(f"/api/v1/api-keys/{key_id}", headers=admin)
        assert r.status_code == 204
        started = time.monotonic()
        assert await closed_code(socket, within_s=WITHIN_S) == 4401
        answered = await asyncio.wait_for(waiting, WITHIN_S)
        assert answered.status_code == 401
        assert answered.headers["content-type"] == "application/problem+json"
        received = await asyncio.wait_for(streaming, WITHIN_S)
        assert "event: error" in received and "signed out" in received
        assert time.monotonic() - started < WITHIN_S * 2
        # Only what stood on the revoked key: another key's socket on B stays open.
        assert (await bystander.subscribe(["board"], None))["type"] == "subscribed"
        await bystander.close()
        # Audit as before: one api_key.revoked.
        r = await a.http.get("/api/v1/audit", params={"action": "api_key.revoked"}, headers=admin)
        assert [i["target"] for i in r.json()["items"]] == [f"api_key:{key_id}"]


async def test_an_admin_revoking_a_users_sessions_closes_their_socket_and_long_poll_on_another_instance(
    redis_settings: Settings,
) -> None:
    _admin_id, admin_email = await user(redis_settings, Role.admin)
    agent_id, agent_email = await user(redis_settings, Role.agent)
    async with instances(redis_settings, 2) as (a, b):
        admin = await bearer(a, admin_email)
        agent = await bearer(b, agent_email)
        socket = await subscribed(b.ws(agent["authorization"].removeprefix("Bearer ")))
        admins_socket = await subscribed(b.ws(admin["authorization"].removeprefix("Bearer ")))
        waiting = long_poll(b, agent)
        await asyncio.sleep(0.2)

        r = await a.http.delete(f"/api/v1/users/{agent_id}/sessions", headers=admin)
        assert r.status_code == 204
        assert await closed_code(socket, within_s=WITHIN_S) == 4401
        assert (await asyncio.wait_for(waiting, WITHIN_S)).status_code == 401
        assert (await admins_socket.subscribe(["board"], None))["type"] == "subscribed"
        await admins_socket.close()


async def test_deactivating_a_user_closes_their_socket_on_another_instance(redis_settings: Settings) -> None:
    _admin_id, admin_email = await user(redis_settings, Role.admin)
    agent_id, agent_email = await user(redis_settings, Role.agent)
    async with instances(redis_settings, 2) as (a, b):
        admin = await bearer(a, admin_email)
        agent = await bearer(b, agent_email)
        socket = await subscribed(b.ws(agent["authorization"].removeprefix("Bearer ")))
        r = await a.http.patch(f"/api/v1/users/{agent_id}", json={"is_active": False}, headers=admin)
        assert r.status_code == 200, r.text
        assert await closed_code(socket, within_s=WITHIN_S) == 4401


async def test_one_sign_in_ended_closes_only_its_own_socket(redis_settings: Settings) -> None:
    _agent_id, agent_email = await user(redis_settings, Role.agent)
    async with instances(redis_settings, 2) as (a, b):
        phone = await bearer(a, agent_email)
        laptop = await bearer(b, agent_email)
        r = await b.http.get("/api/v1/sessions", headers=laptop)
        mine = [s["id"] for s in r.json()["items"] if s["current"]]
        phone_socket = await subscribed(b.ws(phone["authorization"].removeprefix("Bearer ")))
        laptop_socket = await subscribed(b.ws(laptop["authorization"].removeprefix("Bearer ")))
        r = await a.http.delete("/api/v1/sessions", params={"keep_current": "true"}, headers=laptop)
        assert r.status_code == 204
        assert await closed_code(phone_socket, within_s=WITHIN_S) == 4401
        assert (await laptop_socket.subscribe(["board"], None))["type"] == "subscribed"
        r = await b.http.get("/api/v1/sessions", headers=laptop)
        assert [s["id"] for s in r.json()["items"]] == mine
        await laptop_socket.close()


async def test_without_redis_a_logout_closes_the_socket_at_once_in_process(settings: Settings) -> None:
    _agent_id, agent_email = await user(settings, Role.agent)
    async with instances(settings, 1) as (a,):
        r = await a.http.post("/api/v1/auth/login", json={"email": agent_email, "password": PASSWORD})
        a.http.cookies.clear()
        tokens = r.json()
        socket = await subscribed(a.ws(tokens["access_token"]))
        waiting = long_poll(a, {"authorization": f"Bearer {tokens['access_token']}"})
        await asyncio.sleep(0.2)
        r = await a.http.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 204
        assert await closed_code(socket, within_s=WITHIN_S) == 4401
        assert (await asyncio.wait_for(waiting, WITHIN_S)).status_code == 401

"""An API key on the live streams: /ws?token=<key>, long-poll and SSE need `events:read`, and a
key revoked straight in the database (no revocation note: the fallback) has its open socket closed
with 4401 at the next access check. The API's revocation, at once on every instance, is in
tests/realtime/test_revocation.py."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from websockets.exceptions import InvalidStatus

from server.apikeys import service as keys
from server.auth.models import User
from server.db import Database
from server.settings import Settings
from tests.realtime.clients import Client
from tests.realtime.test_live_access import RECHECK_S, closed_code, signed_in


async def _key(db: Database, scopes: list[str]) -> tuple[int, str]:
    async with db.transaction() as s:
        ws_id = (await s.execute(select(User.workspace_id))).scalar_one()
        key, secret = await keys.create_key(
            s, workspace_id=ws_id, name="feed", scopes=scopes, expires_at=None, created_by=None
        )
        return key.id, secret


async def test_a_key_subscribes_on_ws_and_long_polls(settings: Settings) -> None:
    async with signed_in(settings) as a:
        _id, secret = await _key(a.db, ["events:read", "contacts:write"])
        c = await Client.open(f"ws://127.0.0.1:{a.port}/ws?token={secret}")
        assert (await c.subscribe(["board", "contacts"], None))["type"] == "subscribed"
        auth = {"authorization": f"Bearer {secret}"}
        r = await a.http.post("/api/v1/contacts", json={"name": "A", "email": "a@acme.test"}, headers=auth)
        assert r.status_code == 201, r.text
        event = await c.recv()
        assert event["type"] == "contact.created" and event["data"]["by"] is None
        r = await a.http.get(
            "/api/v1/events", params={"topics": "contacts", "after": 0, "timeout": 0}, headers=auth
        )
        assert r.status_code == 200, r.text
        assert [e["type"] for e in r.json()["events"]] == ["contact.created"]
        async with a.http.stream(
            "GET", "/api/v1/events/stream", params={"topics": "board"}, headers=auth
        ) as r:
            assert r.status_code == 200
        await c.close()


async def test_a_key_without_events_read_is_refused_on_ws(settings: Settings) -> None:
    async with signed_in(settings) as a:
        _id, secret = await _key(a.db, ["contacts:read"])
        with pytest.raises(InvalidStatus) as refused:  # closed before the accept: the handshake answers 403
            await Client.open(f"ws://127.0.0.1:{a.port}/ws?token={secret}")
        assert refused.value.response.status_code == 403


async def test_revoking_a_key_closes_its_open_socket_with_4401(settings: Settings) -> None:
    async with signed_in(settings) as a:
        key_id, secret = await _key(a.db, ["events:read"])
        c = await Client.open(f"ws://127.0.0.1:{a.port}/ws?token={secret}")
        assert (await c.subscribe(["board"], None))["type"] == "subscribed"
        assert await c.nothing_for(RECHECK_S * 3) == []  # re-checked, the key stands: stays open
        waiting = asyncio.create_task(
            a.http.get(
                "/api/v1/events",
                params={"topics": "board", "timeout": 2},
                headers={"authorization": f"Bearer {secret}"},
            )
        )
        await asyncio.sleep(0.1)
        async with a.db.transaction() as s:
            await keys.revoke_key(
                s, workspace_id=(await s.execute(select(User.workspace_id))).scalar_one(), key_id=key_id
            )
        assert await closed_code(c, within_s=RECHECK_S + 2) == 4401
        assert (await waiting).status_code == 401
        r = await a.http.get("/api/v1/contacts", headers={"authorization": f"Bearer {secret}"})
        assert r.status_code == 401

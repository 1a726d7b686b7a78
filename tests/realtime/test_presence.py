from __future__ import annotations

import asyncio

from server.auth.models import User
from server.db import Database
from tests.realtime.clients import Client
from tests.realtime.conftest import seed
from ui.web import user_names


async def second_user(db: Database, workspace_id: int) -> int:
    async with db.transaction() as s:
        u = User(workspace_id=workspace_id, email=f"eve{workspace_id}@a.test", name="Eve", password_hash="x")
        s.add(u)
        await s.flush()
        return u.id


async def presence_events(c: Client, n: int) -> list[dict]:
    out = []
    async with asyncio.timeout(10):
        while len(out) < n:
            msg = await c.recv()
            if msg.get("type") == "presence":
                out.append(msg["data"])
    return out


async def test_presence_is_announced_and_gone_after_the_socket_drops(db: Database, start_app) -> None:
    s = await seed(db)
    eve = await second_user(db, s.ws)
    async with start_app() as app:
        watcher = await Client.open(app.ws(s.ws, s.user))
        await watcher.subscribe([f"contact:{s.contact}"], None)
        editor = await Client.open(app.ws(s.ws, eve))
        await editor.send(op="presence", contact_id=s.contact, state="viewing")
        await editor.send(op="presence", contact_id=s.contact, state="editing")
        await editor.send(op="presence", contact_id=s.contact, state="editing")  # no change: no event
        got = await presence_events(watcher, 2)
        assert got == [
            {"contact_id": s.contact, "user_id": eve, "user_name": "Eve", "state": "viewing"},
            {"contact_id": s.contact, "user_id": eve, "user_name": "Eve", "state": "editing"},
        ]
        assert await app.rt.presence.store.list(s.ws, s.contact) == {eve: "editing"}
        editor.conn.transport.abort()
        [left] = await presence_events(watcher, 1)
        assert left["state"] == "left" and left["user_id"] == eve
        assert await app.rt.presence.store.list(s.ws, s.contact) == {}
        await watcher.close()


async def test_presence_of_a_vanished_process_expires(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app(presence_ttl_s=0.5) as app:
        watcher = await Client.open(app.ws(s.ws, s.user))
        await watcher.subscribe([f"contact:{s.contact}"], None)
        # As if another process had announced it and died without saying goodbye.
        await app.rt.presence.store.put((s.ws, s.contact, s.user), "viewing", 0.5)
        [left] = await presence_events(watcher, 1)
        assert left["state"] == "left" and left["user_id"] == s.user and left["user_name"] == "Ada"
        await watcher.close()


async def test_presence_on_another_workspaces_contact_is_refused(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app:
        c = await Client.open(app.ws(s.ws, s.user))
        await c.send(op="presence", contact_id=s.other_contact, state="viewing")
        err = await c.recv()
        assert err["type"] == "error"
        assert await app.rt.presence.store.list(s.other_ws, s.other_contact) == {}
        await c.close()


async def test_a_user_without_a_name_is_shown_by_email_as_in_history(db: Database, start_app) -> None:
    s = await seed(db)
    async with db.transaction() as session:
        nameless = User(workspace_id=s.ws, email=f"noname{s.ws}@a.test", name="", password_hash="x")
        session.add(nameless)
        await session.flush()
        names = await user_names(session, s.ws)  # what the contact page's history shows
    async with start_app() as app:
        watcher = await Client.open(app.ws(s.ws, s.user))
        await watcher.subscribe([f"contact:{s.contact}"], None)
        editor = await Client.open(app.ws(s.ws, nameless.id))
        await editor.send(op="presence", contact_id=s.contact, state="viewing")
        [seen] = await presence_events(watcher, 1)
        assert seen["user_name"] == names[nameless.id] == f"noname{s.ws}@a.test"
        await editor.close()
        await watcher.close()

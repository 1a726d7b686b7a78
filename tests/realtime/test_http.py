from __future__ import annotations

import asyncio
import time

import httpx

from server.db import Database
from tests.realtime.conftest import seed, write


def auth(ws: int, user: int) -> dict[str, str]:
    return {"authorization": f"Bearer {ws}:{user}"}


async def test_long_poll_answers_at_once_when_events_wait(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app, httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
        ids = await write(db, s.ws, 3)
        t0 = time.monotonic()
        r = await http.get("/api/v1/events", params={"topics": "board", "after": 0, "timeout": 30})
        assert time.monotonic() - t0 < 2
        body = r.json()
        assert [e["id"] for e in body["events"]] == ids and body["last_id"] == ids[-1]
        assert set(body["events"][0]) == {"id", "type", "ts", "data"}


async def test_long_poll_waits_out_its_timeout_when_nothing_comes(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app, httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
        [last] = await write(db, s.ws, 1)
        t0 = time.monotonic()
        r = await http.get("/api/v1/events", params={"topics": "board", "after": last, "timeout": 1})
        waited = time.monotonic() - t0
        assert 0.9 < waited < 3
        assert r.json() == {"events": [], "last_id": last}


async def test_long_poll_returns_when_an_event_arrives_and_without_after_only_new_ones(
    db: Database, start_app
) -> None:
    s = await seed(db)
    async with start_app() as app, httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
        old = await write(db, s.ws, 2)
        poll = asyncio.create_task(http.get("/api/v1/events", params={"topics": "board", "timeout": 20}))
        await asyncio.sleep(0.3)
        assert not poll.done()
        await write(db, s.ws, 1, type="contact.updated")  # another topic: keeps waiting
        await asyncio.sleep(0.2)
        assert not poll.done()
        new = await write(db, s.ws, 1)
        t0 = time.monotonic()
        body = (await poll).json()
        assert time.monotonic() - t0 < 2
        assert [e["id"] for e in body["events"]] == new and old[-1] not in [e["id"] for e in body["events"]]


async def test_long_poll_caps_an_answer_at_500_and_resumes_from_last_id(db: Database, start_app) -> None:
    from server.events.service import NewEvent, emit_many

    s = await seed(db)
    async with db.transaction() as session:
        envs = await emit_many(session, s.ws, [NewEvent("message.status", {"n": i}) for i in range(700)])
    async with start_app() as app, httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
        first = (await http.get("/api/v1/events", params={"topics": "board", "after": 0})).json()
        assert len(first["events"]) == 500 and first["last_id"] == envs[499]["id"]
        rest = (
            await http.get("/api/v1/events", params={"topics": "board", "after": first["last_id"]})
        ).json()
        assert [e["id"] for e in rest["events"]] == [e["id"] for e in envs[500:]]


async def test_long_poll_refuses_what_the_caller_may_not_see(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app, httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
        r = await http.get("/api/v1/events", params={"topics": f"contact:{s.other_contact}", "after": 0})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        r = await http.get("/api/v1/events", params={"topics": "board", "timeout": 61})
        assert r.status_code == 422
        r = await http.get("/api/v1/events", params={"topics": "board"}, headers={"authorization": ""})
        assert r.status_code == 401


async def test_an_after_older_than_the_retention_asks_for_a_resync(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app(event_retention_hours=0) as app:
        await write(db, s.ws, 3)
        assert await app.rt.prune_once() >= 3
        [kept] = await write(db, s.ws, 1)
        async with httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
            r = await http.get("/api/v1/events", params={"topics": "board", "after": 1})
            assert r.json() == {"resync": True, "events": [], "last_id": kept}
            r = await http.get("/api/v1/events", params={"topics": "board", "after": kept - 1, "timeout": 0})
            assert [e["id"] for e in r.json()["events"]] == [kept]


async def read_sse(response: httpx.Response, count: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    event_id = None
    async with asyncio.timeout(10):
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: ") and event_id is not None:
                out.append((event_id, line[6:]))
                event_id = None
                if len(out) == count:
                    return out
    return out


async def test_sse_resumes_from_last_event_id(db: Database, start_app) -> None:
    s = await seed(db)
    async with start_app() as app, httpx.AsyncClient(base_url=app.http, headers=auth(s.ws, s.user)) as http:
        ids = await write(db, s.ws, 4)
        headers = {"last-event-id": str(ids[1])}
        async with http.stream(
            "GET", "/api/v1/events/stream", params={"topics": "board"}, headers=headers
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            live = asyncio.create_task(read_sse(r, 4))
            await asyncio.sleep(0.2)
            more = await write(db, s.ws, 2)
            got = await live
        assert [i for i, _ in got] == ids[2:] + more
        assert '"type":"message.status"' in got[0][1]

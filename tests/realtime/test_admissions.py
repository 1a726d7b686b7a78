"""Opening a socket, stream or long-poll asks the database once per caller for a crowd arriving
together, and a revocation is never answered from memory: the `access` note forgets the answer on
every instance (realtime.guard.Admissions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from websockets.exceptions import InvalidStatus

from realtime.guard import Admissions, marks
from server.app import create_app
from server.auth.models import Role
from server.settings import Settings
from tests.conftest import PASSWORD
from tests.realtime.clients import Client
from tests.realtime.conftest import uvicorn_on_free_port
from tests.realtime.test_live_access import closed_code
from tests.realtime.test_revocation import (
    WITHIN_S,
    Instance,
    bearer,
    instances,
    redis_settings,  # noqa: F401  (a fixture)
    subscribed,
    user,
)

# The re-check interval is left long (60 s, as in test_revocation), so a remembered answer would
# live its whole ADMIT_TTL_S: only forgetting can make these tests pass.


class Asked:
    """A real answer that counts how often it was asked, and can be held until released."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> bool:
        self.calls += 1
        await self.release.wait()
        return self.answer


async def test_callers_arriving_together_share_one_question_and_a_yes_is_remembered() -> None:
    admissions = Admissions(ttl_s=60)
    asked = Asked()
    asked.release.clear()
    waiting = [asyncio.create_task(admissions.ask("alice", marks(user_id=1), asked)) for _ in range(50)]
    await asyncio.sleep(0.05)
    asked.release.set()
    assert await asyncio.gather(*waiting) == [True] * 50
    assert asked.calls == 1
    assert await admissions.ask("alice", marks(user_id=1), asked) is True
    assert asked.calls == 1


async def test_a_no_is_never_remembered() -> None:
    admissions = Admissions(ttl_s=60)
    asked = Asked(answer=False)
    assert await admissions.ask("bob", marks(user_id=2), asked) is False
    assert await admissions.ask("bob", marks(user_id=2), asked) is False
    assert asked.calls == 2


async def test_forgetting_drops_only_answers_standing_on_a_named_identity() -> None:
    admissions = Admissions(ttl_s=60)
    asked = Asked()
    await admissions.ask("phone", marks(user_id=1, session_ids=["a"]), asked)
    await admissions.ask("laptop", marks(user_id=1, session_ids=["b"]), asked)
    await admissions.ask("key", marks(api_key_id=7), asked)
    admissions.forget(marks(session_ids=["a"]))
    assert len(admissions) == 2
    admissions.forget(marks(user_id=1))
    assert len(admissions) == 1
    calls = asked.calls
    await admissions.ask("key", marks(api_key_id=7), asked)
    assert asked.calls == calls
    await admissions.ask("phone", marks(user_id=1, session_ids=["a"]), asked)
    assert asked.calls == calls + 1


async def test_an_answer_asked_while_a_revocation_arrived_is_asked_again_and_not_kept() -> None:
    admissions = Admissions(ttl_s=60)
    asked = Asked()
    asked.release.clear()
    pending = asyncio.create_task(admissions.ask("carol", marks(user_id=3), asked))
    await asyncio.sleep(0.02)
    admissions.forget(marks(user_id=3))  # the database answered "yes" before the commit
    asked.answer = False  # and says "no" once asked again
    asked.release.set()
    assert await pending is False
    assert asked.calls == 2
    assert len(admissions) == 0


async def test_one_caller_going_away_does_not_cancel_the_others_answer() -> None:
    admissions = Admissions(ttl_s=60)
    asked = Asked()
    asked.release.clear()
    first = asyncio.create_task(admissions.ask("dave", marks(user_id=4), asked))
    second = asyncio.create_task(admissions.ask("dave", marks(user_id=4), asked))
    await asyncio.sleep(0.02)
    first.cancel()
    asked.release.set()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first
    assert asked.calls == 1


@asynccontextmanager
async def counted(settings: Settings) -> AsyncIterator[tuple[Instance, list[str]]]:
    """One app on a real server, and the statements it sends that read users or sign-ins."""
    settings = settings.model_copy(update={"ws_access_recheck_s": 60.0})
    app = create_app(settings)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "user_account" in statement or "refresh_token" in statement:
            statements.append(statement)

    rt = app.state.services.realtime
    async with uvicorn_on_free_port(rt.wrap(app), ws_max_size=settings.ws_max_message_bytes) as (port, _s):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            event.listen(app.state.services.db.engine.sync_engine, "before_cursor_execute", seen)
            yield Instance(port, http), statements


async def test_a_crowd_of_sockets_for_one_sign_in_asks_the_database_once_each_way(
    settings: Settings,
) -> None:
    _id, email = await user(settings, Role.agent)
    async with counted(settings) as (at, statements):
        token = (await bearer(at, email))["authorization"].removeprefix("Bearer ")
        statements.clear()
        sockets = await asyncio.gather(*(subscribed(at.ws(token)) for _ in range(30)))
        # One "is the user active" and one "does the sign-in stand", not 30 of each.
        assert len(statements) == 2, statements
        more = await subscribed(at.ws(token))
        assert len(statements) == 2
        for s in [*sockets, more]:
            await s.close()


async def test_a_logout_refuses_the_next_socket_at_once_on_the_same_instance(settings: Settings) -> None:
    _id, email = await user(settings, Role.agent)
    async with counted(settings) as (at, _statements):
        r = await at.http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        at.http.cookies.clear()
        tokens = r.json()
        first = await subscribed(at.ws(tokens["access_token"]))  # the "yes" is remembered
        r = await at.http.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 204
        again = await Client.open(at.ws(tokens["access_token"]))
        assert await closed_code(again, within_s=WITHIN_S) == 4401
        assert await closed_code(first, within_s=WITHIN_S) == 4401
        # The long-poll, whose caller had been admitted by the socket's answer, too.
        headers = {"authorization": f"Bearer {tokens['access_token']}"}
        r = await at.http.get("/api/v1/events", params={"topics": "board", "timeout": 0}, headers=headers)
        assert r.status_code == 401


async def test_deactivating_a_user_on_one_instance_refuses_their_next_socket_on_another(
    redis_settings: Settings,  # noqa: F811
) -> None:
    _admin_id, admin_email = await user(redis_settings, Role.admin)
    agent_id, agent_email = await user(redis_settings, Role.agent)
    async with instances(redis_settings, 2) as (a, b):
        admin = await bearer(a, admin_email)
        token = (await bearer(b, agent_email))["authorization"].removeprefix("Bearer ")
        socket = await subscribed(b.ws(token))  # B remembers "active" and "signed in"
        r = await a.http.patch(f"/api/v1/users/{agent_id}", json={"is_active": False}, headers=admin)
        assert r.status_code == 200, r.text
        # Opened while the note is on its way: whatever B let in is closed when it lands.
        try:
            racing: Client | None = await Client.open(b.ws(token))
        except InvalidStatus:
            racing = None  # the note was there first: refused before accepting
        if racing is not None:
            assert await closed_code(racing, within_s=WITHIN_S) in (1008, 4401)
        assert await closed_code(socket, within_s=WITHIN_S) == 4401
        # The note has landed on B (the socket closed): B asks the database, which says no.
        with pytest.raises(InvalidStatus):
            await Client.open(b.ws(token))


async def test_revoking_a_key_on_one_instance_refuses_its_next_socket_on_another(
    redis_settings: Settings,  # noqa: F811
) -> None:
    _admin_id, admin_email = await user(redis_settings, Role.admin)
    async with instances(redis_settings, 2) as (a, b):
        admin = await bearer(a, admin_email)
        r = await a.http.post(
            "/api/v1/api-keys", json={"name": "feed", "scopes": ["events:read"]}, headers=admin
        )
        key_id, secret = r.json()["id"], r.json()["key"]
        socket = await subscribed(b.ws(secret))  # B remembers the key stands
        r = await a.http.delete(f"/api/v1/api-keys/{key_id}", headers=admin)
        assert r.status_code == 204
        assert await closed_code(socket, within_s=WITHIN_S) == 4401
        with pytest.raises(InvalidStatus):
            await Client.open(b.ws(secret))  # the key itself is looked up: refused before accepting

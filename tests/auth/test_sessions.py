"""Your sessions (refresh families): listed with device and address, revoked one by one or all;
an admin revokes a user's; a revoked session's open socket is closed with 4401."""

from __future__ import annotations

from typing import Any

import httpx

from server.settings import Settings
from tests.conftest import PASSWORD, ClientFactory
from tests.realtime.clients import Client
from tests.realtime.test_live_access import RECHECK_S, closed_code, signed_in


async def sign_in(app: Any, email: str, agent: str) -> tuple[httpx.AsyncClient, dict[str, Any]]:
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    r = await c.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, headers={"user-agent": agent}
    )
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    c.cookies.clear()
    return c, r.json()


async def test_sessions_list_devices_and_the_current_one(app: Any, make_client: ClientFactory) -> None:
    await make_client("agent", email="sam@acme.test")
    laptop, _ = await sign_in(app, "sam@acme.test", "Laptop/1.0")
    phone, pair = await sign_in(app, "sam@acme.test", "Phone/2.0")
    # A refresh renews the session: same id, later last use.
    r = await phone.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": pair["refresh_token"]},
        headers={"user-agent": "Phone/2.1"},
    )
    assert r.status_code == 200
    items = (await laptop.get("/api/v1/sessions")).json()["items"]
    assert len(items) == 3  # make_client's own sign-in too
    by_agent = {i["user_agent"]: i for i in items}
    assert by_agent["Laptop/1.0"]["current"] is True and by_agent["Phone/2.1"]["current"] is False
    assert by_agent["Phone/2.1"]["ip"] == "127.0.0.1"
    assert by_agent["Phone/2.1"]["last_used_at"] > by_agent["Phone/2.1"]["created_at"]
    await laptop.aclose()
    await phone.aclose()


async def test_revoking_one_session_ends_its_refresh_and_leaves_the_others(
    app: Any, make_client: ClientFactory
) -> None:
    await make_client("agent", email="kim@acme.test")
    a, _ = await sign_in(app, "kim@acme.test", "A")
    b, pair_b = await sign_in(app, "kim@acme.test", "B")
    items = (await a.get("/api/v1/sessions")).json()["items"]
    b_id = next(i["id"] for i in items if i["user_agent"] == "B")
    assert (await a.delete(f"/api/v1/sessions/{b_id}")).status_code == 204
    assert (
        await b.post("/api/v1/auth/refresh", json={"refresh_token": pair_b["refresh_token"]})
    ).status_code == 401
    left = {i["user_agent"] for i in (await a.get("/api/v1/sessions")).json()["items"]}
    assert "B" not in left and "A" in left
    assert (await a.delete(f"/api/v1/sessions/{b_id}")).status_code == 404
    assert (await a.delete("/api/v1/sessions/not-a-session")).status_code == 404
    await a.aclose()
    await b.aclose()


async def test_revoking_all_sessions_keeps_the_current_only_when_asked(
    app: Any, make_client: ClientFactory
) -> None:
    await make_client("agent", email="lee@acme.test")
    a, _ = await sign_in(app, "lee@acme.test", "A")
    await sign_in(app, "lee@acme.test", "B")
    assert (await a.delete("/api/v1/sessions", params={"keep_current": "true"})).status_code == 204
    assert [i["user_agent"] for i in (await a.get("/api/v1/sessions")).json()["items"]] == ["A"]
    assert (await a.delete("/api/v1/sessions")).status_code == 204
    assert (await a.get("/api/v1/sessions")).json()["items"] == []
    await a.aclose()


async def test_an_admin_revokes_a_users_sessions(
    app: Any, client: httpx.AsyncClient, make_client: ClientFactory
) -> None:
    other = await make_client("admin", workspace="Other")
    await make_client("agent", email="max@acme.test")
    a, pair = await sign_in(app, "max@acme.test", "A")
    uid = (await a.get("/api/v1/me")).json()["id"]
    assert (await other.delete(f"/api/v1/users/{uid}/sessions")).status_code == 404
    assert (await a.delete(f"/api/v1/users/{uid}/sessions")).status_code == 403
    assert (await client.delete(f"/api/v1/users/{uid}/sessions")).status_code == 204
    assert (
        await a.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 401
    audit = (await client.get("/api/v1/audit", params={"action": "user.sessions_revoked"})).json()["items"]
    assert [(i["target"], i["details"]["sessions"]) for i in audit] == [(f"user:{uid}", 2)]
    await a.aclose()


async def test_revoking_a_session_closes_its_open_socket_with_4401(settings: Settings) -> None:
    async with signed_in(settings) as a:
        c = await Client.open(a.ws())
        assert (await c.subscribe(["board"], None))["type"] == "subscribed"
        sid = (await a.http.get("/api/v1/sessions", headers=a.bearer)).json()["items"][0]["id"]
        assert (await a.http.delete(f"/api/v1/sessions/{sid}", headers=a.bearer)).status_code == 204
        assert await closed_code(c, within_s=RECHECK_S + 2) == 4401

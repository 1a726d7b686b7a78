"""Credentials that no longer hold (issue 14 items 6 and 17): deactivated and deleted users, the
users endpoint across workspaces, the metrics token."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import delete, update

from server.auth.models import User
from server.auth.service import user_is_active
from tests.conftest import PASSWORD, ClientFactory, make_settings


async def _user_id(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/v1/me")).json()["id"])


async def test_a_deactivated_users_access_token_is_refused(make_client: ClientFactory, app: Any) -> None:
    agent = await make_client("agent")
    assert (await agent.get("/api/v1/contacts")).status_code == 200
    uid = await _user_id(agent)
    async with app.state.services.db.transaction() as s:
        await s.execute(update(User).where(User.id == uid).values(is_active=False))
    r = await agent.get("/api/v1/contacts")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert (await agent.post("/api/v1/contacts", json={"name": "x"})).status_code == 401


async def test_a_deleted_users_access_token_is_refused(make_client: ClientFactory, app: Any) -> None:
    agent = await make_client("agent")
    uid = await _user_id(agent)
    async with app.state.services.db.transaction() as s:
        await s.execute(delete(User).where(User.id == uid))
    assert (await agent.get("/api/v1/contacts")).status_code == 401


async def test_a_demoted_admins_token_stops_acting_as_admin_at_once(make_client: ClientFactory) -> None:
    """The role in an access token is checked against the user's row: a demotion takes effect on
    the next request, not when the token expires; a renewed token carries the new role."""
    boss = await make_client("admin")
    deputy = await make_client("admin")
    login = (
        await deputy.post(
            "/api/v1/auth/login",
            json={"email": (await deputy.get("/api/v1/me")).json()["email"], "password": PASSWORD},
        )
    ).json()
    deputy.headers["authorization"] = f"Bearer {login['access_token']}"
    assert (await deputy.get("/api/v1/users")).status_code == 200
    r = await boss.patch(f"/api/v1/users/{await _user_id(deputy)}", json={"role": "viewer"})
    assert r.status_code == 200, r.text
    r = await deputy.get("/api/v1/users")
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (
        await deputy.post("/api/v1/api-keys", json={"name": "k", "scopes": ["contacts:read"]})
    ).status_code == 401
    renewed = await deputy.post("/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    deputy.headers["authorization"] = f"Bearer {renewed.json()['access_token']}"
    assert (await deputy.get("/api/v1/contacts")).status_code == 200
    assert (await deputy.get("/api/v1/users")).status_code == 403


async def test_user_is_active_answers_for_the_live_row(make_client: ClientFactory, app: Any) -> None:
    db = app.state.services.db
    uid = await _user_id(await make_client("viewer"))
    ws = (await (await make_client("admin")).get("/api/v1/me")).json()["workspace_id"]
    assert await user_is_active(db, uid)
    assert await user_is_active(db, uid, ws)
    assert not await user_is_active(db, uid, ws + 1000)  # not in that workspace
    assert not await user_is_active(db, uid + 1000)
    async with db.transaction() as s:
        await s.execute(update(User).where(User.id == uid).values(is_active=False))
    assert not await user_is_active(db, uid)


async def test_creating_a_user_does_not_reveal_emails_of_other_workspaces(
    make_client: ClientFactory,
) -> None:
    acme = await make_client("admin", workspace="Acme")
    other = await make_client("admin", workspace="Globex")
    taken = (await other.get("/api/v1/me")).json()["email"]
    r = await acme.post("/api/v1/users", json={"email": taken, "password": "longenough"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "email"
    assert "exist" not in r.text and "taken" not in r.text
    # In the caller's own workspace, the conflict is theirs to see.
    own = (await acme.get("/api/v1/me")).json()["email"]
    r = await acme.post("/api/v1/users", json={"email": own.upper(), "password": "longenough"})
    assert r.status_code == 409


async def test_metrics_want_the_bearer_token_when_one_is_set(db_url: str) -> None:
    from server.app import create_app

    app = create_app(make_settings(db_url, metrics_token="scrape-" + "s" * 24))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as c,
    ):
        r = await c.get("/metrics")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        ok = await c.get("/metrics", headers={"Authorization": "Bearer scrape-" + "s" * 24})
        assert ok.status_code == 200
        assert "switchboard_http_request_duration_seconds" in ok.text

"""API keys: made by admins, shown once, stored as a hash, acting for the workspace within scopes."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import httpx
from sqlalchemy import select, update

from server.apikeys.models import ApiKey
from server.app import create_app
from server.auth.models import User
from server.db import Database, utcnow
from server.settings import Settings
from tests.conftest import ClientFactory

ALL = ["contacts:read", "contacts:write", "messages:send", "events:read", "admin"]


async def make_key(admin: httpx.AsyncClient, scopes: list[str], **extra: Any) -> dict[str, Any]:
    r = await admin.post("/api/v1/api-keys", json={"name": "integration", "scopes": scopes, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def keyed(app: Any, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {secret}"},
    )


async def test_a_new_key_is_shown_once_and_stored_only_as_its_hash(
    client: httpx.AsyncClient, db: Database
) -> None:
    made = await make_key(client, ["contacts:read", "admin"])
    secret = made["key"]
    assert secret.startswith("sb_live_") and len(secret) == len("sb_live_") + 43
    assert made["scopes"] == ["contacts:read", "admin"] and made["prefix"] == secret[: len(made["prefix"])]
    listed = (await client.get("/api/v1/api-keys")).json()["items"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert "key" not in listed[0] and secret not in str(listed)
    assert listed[0]["created_by"] is not None and listed[0]["last_used_at"] is None
    async with db.transaction() as s:
        row = await s.get(ApiKey, made["id"])
        assert row is not None and row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str([getattr(row, c.key) for c in ApiKey.__table__.columns])


async def test_key_creation_checks_its_input(client: httpx.AsyncClient, make_client: ClientFactory) -> None:
    r = await client.post("/api/v1/api-keys", json={"name": "x", "scopes": ["contacts:delete"]})
    assert r.status_code == 422
    past = (utcnow() - dt.timedelta(hours=1)).isoformat()
    r = await client.post("/api/v1/api-keys", json={"name": "x", "scopes": ["admin"], "expires_at": past})
    assert r.status_code == 422
    agent = await make_client("agent")
    assert (await agent.post("/api/v1/api-keys", json={"name": "x", "scopes": ["admin"]})).status_code == 403


async def test_a_key_works_within_its_scopes_and_names_the_missing_one(
    app: Any, client: httpx.AsyncClient
) -> None:
    reader = await make_key(client, ["contacts:read"])
    async with keyed(app, reader["key"]) as k:
        assert (await k.get("/api/v1/contacts")).status_code == 200
        assert (await k.get("/api/v1/templates")).status_code == 200
        for method, path, body, scope in [
            ("POST", "/api/v1/contacts", {"name": "A", "email": "a@acme.test"}, "contacts:write"),
            (
                "POST",
                "/api/v1/messages",
                {"contact_id": 1, "channel": "email", "body": "hi"},
                "messages:send",
            ),
            (
                "POST",
                "/api/v1/campaigns",
                {"name": "c", "template_id": 1, "audience": {"tag": "x"}},
                "messages:send",
            ),
            ("GET", "/api/v1/providers", None, "admin"),
            ("GET", "/api/v1/users", None, "admin"),
            ("GET", "/api/v1/audit", None, "admin"),
            ("GET", "/api/v1/api-keys", None, "admin"),
            ("GET", "/api/v1/endpoints", None, "admin"),
        ]:
            r = await k.request(method, path, json=body)
            assert r.status_code == 403, (path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert scope in r.json()["detail"], (path, r.json())
        r = await k.get("/api/v1/events", params={"topics": "board", "timeout": 0})
        assert r.status_code == 403 and "events:read" in r.json()["detail"]
    writer = await make_key(client, ["contacts:read", "contacts:write", "events:read"])
    async with keyed(app, writer["key"]) as k:
        r = await k.post("/api/v1/contacts", json={"name": "A", "email": "a@acme.test"})
        assert r.status_code == 201, r.text
        r = await k.get("/api/v1/events", params={"topics": "board", "timeout": 0})
        assert r.status_code == 200, r.text


async def test_a_revoked_key_is_refused_at_once(app: Any, client: httpx.AsyncClient) -> None:
    made = await make_key(client, ["contacts:read"])
    async with keyed(app, made["key"]) as k:
        assert (await k.get("/api/v1/contacts")).status_code == 200
        assert (await client.delete(f"/api/v1/api-keys/{made['id']}")).status_code == 204
        r = await k.get("/api/v1/contacts")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    listed = (await client.get("/api/v1/api-keys")).json()["items"]
    assert listed[0]["revoked_at"] is not None
    assert (await client.delete("/api/v1/api-keys/999999")).status_code == 404


async def test_an_expired_key_is_refused(app: Any, client: httpx.AsyncClient, db: Database) -> None:
    soon = (utcnow() + dt.timedelta(hours=1)).isoformat()
    made = await make_key(client, ["contacts:read"], expires_at=soon)
    async with keyed(app, made["key"]) as k:
        assert (await k.get("/api/v1/contacts")).status_code == 200
        async with db.transaction() as s:
            await s.execute(
                update(ApiKey)
                .where(ApiKey.id == made["id"])
                .values(expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        assert (await k.get("/api/v1/contacts")).status_code == 401


async def test_a_key_survives_its_creators_deactivation(
    app: Any, client: httpx.AsyncClient, db: Database
) -> None:
    made = await make_key(client, ["contacts:read"])
    creator = (await client.get("/api/v1/me")).json()["id"]
    async with db.transaction() as s:
        await s.execute(update(User).where(User.id == creator).values(is_active=False))
    async with keyed(app, made["key"]) as k:
        assert (await k.get("/api/v1/contacts")).status_code == 200


async def test_contact_history_attributes_changes_to_the_key(app: Any, client: httpx.AsyncClient) -> None:
    made = await make_key(client, ["contacts:read", "contacts:write"])
    async with keyed(app, made["key"]) as k:
        contact = (await k.post("/api/v1/contacts", json={"name": "A", "email": "a@acme.test"})).json()
        r = await k.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "B"})
        assert r.status_code == 200, r.text
    items = (await client.get(f"/api/v1/contacts/{contact['id']}/history")).json()["items"]
    assert items and all(i["api_key_id"] == made["id"] and i["user_id"] is None for i in items)
    assert {i["field"] for i in items} >= {"name", "email"}


async def test_last_use_is_noted_at_most_once_a_minute(
    app: Any, client: httpx.AsyncClient, db: Database
) -> None:
    made = await make_key(client, ["contacts:read"])
    async with keyed(app, made["key"]) as k:
        await k.get("/api/v1/contacts")
        async with db.transaction() as s:
            first = (
                await s.execute(
                    select(ApiKey.last_used_at, ApiKey.last_used_ip).where(ApiKey.id == made["id"])
                )
            ).one()
        assert first.last_used_at is not None and first.last_used_ip == "127.0.0.1"
        await k.get("/api/v1/contacts")
        async with db.transaction() as s:
            again = (await s.execute(select(ApiKey.last_used_at).where(ApiKey.id == made["id"]))).scalar()
        assert again == first.last_used_at


async def test_a_key_has_its_own_rate_limit_bucket(settings: Settings, redis_url: str) -> None:
    limited = settings.model_copy(
        update={
            "rate_limit_enabled": True,
            "rate_limit_user_burst": 3,
            "rate_limit_user_per_s": 0.01,
            "redis_url": redis_url,
            "redis_prefix": f"sb-test-keys-{id(settings)}:",
        }
    )
    app = create_app(limited)
    async with app.router.lifespan_context(app):
        from server.auth import service as auth_service
        from server.auth.models import Role
        from tests.conftest import PASSWORD

        async with app.state.services.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            await auth_service.create_user(
                s, workspace_id=ws.id, email="boss@acme.test", password=PASSWORD, role=Role.admin
            )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as admin:
            r = await admin.post("/api/v1/auth/login", json={"email": "boss@acme.test", "password": PASSWORD})
            admin.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            admin.cookies.clear()
            one = await make_key(admin, ["contacts:read"])
            two = await make_key(admin, ["contacts:read"])
        async with keyed(app, one["key"]) as k1, keyed(app, two["key"]) as k2:
            codes = [(await k1.get("/api/v1/contacts")).status_code for _ in range(4)]
            assert codes[:3] == [200, 200, 200] and codes[3] == 429
            assert (await k2.get("/api/v1/contacts")).status_code == 200

"""Each audited action is written by the handler that makes the change, with actor, target and
address, and never a secret value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.backup import backup, restore
from server.db import Database
from server.seed import create_user_cli
from server.settings import Settings
from tests.conftest import PASSWORD, ClientFactory
from tests.messages.support import template

SMTP_SECRET = "smtp-password-secret-0451"


async def entries(db: Database, action_prefix: str = "") -> list[AuditEntry]:
    async with db.transaction() as s:
        q = select(AuditEntry).where(AuditEntry.action.startswith(action_prefix)).order_by(AuditEntry.id)
        return list((await s.execute(q)).scalars())


def everything(rows: list[AuditEntry]) -> str:
    return orjson.dumps([[r.action, r.target, r.ip, r.details] for r in rows]).decode()


async def test_sign_ins_and_failed_sign_ins_are_recorded_with_address_and_method(
    make_client: ClientFactory, app: Any, db: Database
) -> None:
    await make_client("agent", email="pat@acme.test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as anon:
        r = await anon.post(
            "/api/v1/auth/login", json={"email": "pat@acme.test", "password": "wrong password"}
        )
        assert r.status_code == 401
        r = await anon.post("/api/v1/auth/login", json={"email": "nobody@acme.test", "password": "x"})
        assert r.status_code == 401
        # The browser form too.
        page = await anon.get("/login")
        csrf = anon.cookies.get("sb_csrf")
        assert page.status_code == 200 and csrf
        r = await anon.post(
            "/login", data={"email": "pat@acme.test", "password": PASSWORD, "csrf_token": csrf}
        )
        assert r.status_code == 303
    rows = await entries(db, "auth.")
    logins = [r for r in rows if r.action == "auth.login"]
    failed = [r for r in rows if r.action == "auth.login_failed"]
    assert len(logins) == 2  # the API sign-in of make_client, then the form
    assert all(
        r.actor_type == "user" and r.ip == "127.0.0.1" and r.details["method"] == "password" for r in logins
    )
    assert len(failed) == 1  # the unknown address belongs to no workspace
    assert failed[0].actor_type == "system" and failed[0].target == logins[0].target
    assert failed[0].ip == "127.0.0.1" and failed[0].details["method"] == "password"
    assert PASSWORD not in everything(rows) and "wrong password" not in everything(rows)


async def test_user_created_role_changed_and_deactivated_are_recorded(
    client: httpx.AsyncClient, make_client: ClientFactory, db: Database
) -> None:
    r = await client.post(
        "/api/v1/users", json={"email": "new@acme.test", "password": PASSWORD, "role": "viewer"}
    )
    assert r.status_code == 201
    uid = r.json()["id"]
    me = (await client.get("/api/v1/me")).json()["id"]
    assert (await client.patch(f"/api/v1/users/{uid}", json={"role": "agent"})).status_code == 200
    assert (await client.patch(f"/api/v1/users/{uid}", json={"is_active": False})).status_code == 200
    assert (await client.patch(f"/api/v1/users/{me}", json={"is_active": False})).status_code == 422
    rows = await entries(db, "user.")
    assert [(r.action, r.target, r.actor_type, r.actor_id) for r in rows] == [
        ("user.created", f"user:{uid}", "user", me),
        ("user.role_changed", f"user:{uid}", "user", me),
        ("user.deactivated", f"user:{uid}", "user", me),
    ]
    assert rows[1].details == {"from": "viewer", "to": "agent"}
    assert PASSWORD not in everything(rows)


async def test_createuser_command_is_recorded_as_the_system(
    settings: Settings, app: Any, db: Database
) -> None:
    from server.auth.models import Role

    uid = await create_user_cli(
        settings, workspace="Acme", email="cli@acme.test", password=PASSWORD, role=Role.admin
    )
    rows = await entries(db, "user.created")
    assert [(r.actor_type, r.target) for r in rows] == [("system", f"user:{uid}")]


async def test_provider_changes_name_the_fields_and_never_their_secret_values(
    client: httpx.AsyncClient, db: Database
) -> None:
    config = {"host": "smtp.example.test", "port": 2525, "username": "u", "from_email": "a@example.test"}
    r = await client.post(
        "/api/v1/providers",
        json={
            "name": "mail",
            "kind": "smtp",
            "channel": "email",
            "config": {**config, "password": SMTP_SECRET},
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await client.patch(
        f"/api/v1/providers/{pid}", json={"priority": 5, "config": {"password": SMTP_SECRET + "-new"}}
    )
    assert r.status_code == 200, r.text
    assert (await client.delete(f"/api/v1/providers/{pid}")).status_code == 204
    rows = await entries(db, "provider.")
    assert [(r.action, r.target) for r in rows] == [
        ("provider.created", f"provider:{pid}"),
        ("provider.updated", f"provider:{pid}"),
        ("provider.deleted", f"provider:{pid}"),
    ]
    assert rows[1].details == {"fields": ["config.password", "priority"]}
    assert SMTP_SECRET not in everything(rows)


async def test_api_key_creation_and_revocation_are_recorded_without_the_secret(
    client: httpx.AsyncClient, db: Database
) -> None:
    made = (await client.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["admin"]})).json()
    async with httpx.AsyncClient(
        transport=client._transport,
        base_url="http://testserver",
        headers={"authorization": f"Bearer {made['key']}"},
    ) as key:
        # A key acting is attributed to the key.
        r = await key.post("/api/v1/users", json={"email": "bot-made@acme.test", "password": PASSWORD})
        assert r.status_code == 201, r.text
    assert (await client.delete(f"/api/v1/api-keys/{made['id']}")).status_code == 204
    rows = await entries(db, "api_key.")
    assert [(r.action, r.target) for r in rows] == [
        ("api_key.created", f"api_key:{made['id']}"),
        ("api_key.revoked", f"api_key:{made['id']}"),
    ]
    assert made["key"] not in everything(await entries(db))
    by_key = (await client.get("/api/v1/audit", params={"actor": f"api_key:{made['id']}"})).json()["items"]
    assert [i["action"] for i in by_key] == ["user.created"]


async def test_endpoint_changes_are_recorded_without_the_signing_secret(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post("/api/v1/endpoints", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]})
    assert r.status_code == 201, r.text
    eid, secret = r.json()["id"], r.json()["secret"]
    assert (await client.patch(f"/api/v1/endpoints/{eid}", json={"description": "ops"})).status_code == 200
    assert (await client.delete(f"/api/v1/endpoints/{eid}")).status_code == 204
    rows = await entries(db, "endpoint.")
    assert [r.action for r in rows] == ["endpoint.created", "endpoint.updated", "endpoint.deleted"]
    assert rows[1].details == {"fields": ["description"]}
    assert secret not in everything(rows)


async def test_imports_and_campaigns_are_recorded(client: httpx.AsyncClient, db: Database) -> None:
    csv = "name,email,tags\nAda,ada@acme.test,vip\n"
    r = await client.post("/api/v1/contacts/import", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    tpl = await template(client, subject="Hi", body="Hello {{ name }}")
    r = await client.post(
        "/api/v1/campaigns", json={"name": "Spring", "template_id": tpl["id"], "audience": {"tag": "vip"}}
    )
    assert r.status_code == 202, r.text
    imports = await entries(db, "import.")
    assert [(e.action, e.target, e.details) for e in imports] == [
        ("import.started", f"import:{job_id}", {"rows": 1, "mode": "create"})
    ]
    campaigns = await entries(db, "campaign.")
    assert [(e.action, e.details) for e in campaigns] == [("campaign.started", {"name": "Spring"})]


async def test_a_backup_is_recorded_and_the_log_survives_backup_and_restore(
    client: httpx.AsyncClient, settings: Settings, db: Database, tmp_path: Path
) -> None:
    assert (
        await client.post("/api/v1/users", json={"email": "kept@acme.test", "password": PASSWORD})
    ).status_code == 201
    before = [(e.id, e.action) for e in await entries(db)]
    file = tmp_path / "audit.backup"
    await backup(settings, file)
    after_backup = await entries(db)
    assert after_backup[-1].action == "backup.created" and after_backup[-1].actor_type == "system"
    assert (
        await client.post("/api/v1/users", json={"email": "lost@acme.test", "password": PASSWORD})
    ).status_code == 201
    await restore(settings, file)
    assert [(e.id, e.action) for e in await entries(db)] == before


async def test_exports_are_recorded(client: httpx.AsyncClient, db: Database) -> None:
    r = await client.get("/api/v1/contacts/export", params={"tag": "vip", "format": "ndjson"})
    assert r.status_code == 200
    r = await client.get("/api/v1/messages/export", params={"from": "2026-01-01"})
    assert r.status_code == 200
    rows = await entries(db, "export.")
    assert [(e.target, e.details.get("format")) for e in rows] == [
        ("contacts", "ndjson"),
        ("messages", "csv"),
    ]
    assert rows[0].details["tag"] == "vip" and rows[1].details["from"].startswith("2026-01-01")

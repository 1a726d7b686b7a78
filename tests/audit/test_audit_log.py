"""The admin audit log: recorded with the change, read by admins with filters and cursors, pruned."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from server.audit import service as audit
from server.audit.models import AuditEntry
from server.db import Database, utcnow
from server.reports.job import ReportJob
from tests.conftest import ClientFactory


async def _workspace_id(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/v1/me")).json()["workspace_id"])


async def _seed(db: Database, ws: int, rows: list[dict[str, Any]]) -> None:
    async with db.transaction() as s:
        for r in rows:
            entry = audit.record(s, workspace_id=ws, **r)
            if "at" in r.get("details", {}):
                entry.at = dt.datetime.fromisoformat(r["details"]["at"])


async def test_audit_lists_newest_first_with_the_design_shape(
    client: httpx.AsyncClient, db: Database
) -> None:
    ws = await _workspace_id(client)
    await _seed(
        db,
        ws,
        [
            {"actor": audit.Actor.user(1), "action": "user.created", "target": "user:9", "ip": "10.0.0.1"},
            {"actor": audit.SYSTEM, "action": "backup.created", "details": {"file": "x.dump"}},
        ],
    )
    r = await client.get("/api/v1/audit")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    actions = [i["action"] for i in items]
    assert actions.index("backup.created") < actions.index("user.created")
    first = next(i for i in items if i["action"] == "user.created")
    assert set(first) == {"id", "at", "actor", "action", "target", "ip", "details"}
    assert first["actor"] == {"type": "user", "id": 1}
    assert first["target"] == "user:9" and first["ip"] == "10.0.0.1"
    assert r.json()["next_cursor"] is None


async def test_audit_filters_by_actor_action_family_and_time(client: httpx.AsyncClient, db: Database) -> None:
    ws = await _workspace_id(client)
    old = (utcnow() - dt.timedelta(days=10)).isoformat()
    await _seed(
        db,
        ws,
        [
            {"actor": audit.Actor.api_key(3), "action": "campaign.started", "details": {}},
            {"actor": audit.Actor.user(9002), "action": "auth.login_failed", "details": {"at": old}},
            {"actor": audit.Actor.user(9002), "action": "auth.login", "details": {}},
        ],
    )

    async def actions(**params: str) -> list[str]:
        r = await client.get("/api/v1/audit", params=params)
        assert r.status_code == 200, r.text
        return [i["action"] for i in r.json()["items"]]

    assert await actions(actor="api_key:3") == ["campaign.started"]
    assert await actions(actor="user:9002") == ["auth.login", "auth.login_failed"]
    assert await actions(action="auth.login", actor="user:9002") == ["auth.login"]
    assert await actions(action="auth", actor="user:9002") == ["auth.login", "auth.login_failed"]
    assert await actions(action="auth.*", actor="user:9002") == ["auth.login", "auth.login_failed"]
    since = (utcnow() - dt.timedelta(days=1)).date().isoformat()
    assert "auth.login_failed" not in await actions(**{"from": since, "actor": "user:9002"})
    until = (utcnow() - dt.timedelta(days=5)).isoformat()
    assert await actions(to=until, actor="user:9002") == ["auth.login_failed"]
    bad = await client.get("/api/v1/audit", params={"actor": "robot"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    bad = await client.get("/api/v1/audit", params={"from": "yesterday"})
    assert bad.status_code == 422


async def test_audit_pages_with_a_cursor(client: httpx.AsyncClient, db: Database) -> None:
    ws = await _workspace_id(client)
    await _seed(
        db, ws, [{"actor": audit.SYSTEM, "action": "backup.created", "target": str(i)} for i in range(5)]
    )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "action": "backup.created"}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/api/v1/audit", params=params)).json()
        seen += [i["target"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["4", "3", "2", "1", "0"]


async def test_audit_is_for_admins_of_their_own_workspace(make_client: ClientFactory, db: Database) -> None:
    agent = await make_client("agent")
    r = await agent.get("/api/v1/audit")
    assert r.status_code == 403
    other = await make_client("admin", workspace="Other")
    mine = await make_client("admin")
    await _seed(db, await _workspace_id(mine), [{"actor": audit.SYSTEM, "action": "backup.created"}])
    assert (await other.get("/api/v1/audit", params={"action": "backup.created"})).json()["items"] == []


async def test_the_report_job_prunes_audit_entries_past_retention(
    client: httpx.AsyncClient, db: Database
) -> None:
    ws = await _workspace_id(client)
    async with db.transaction() as s:
        audit.record(s, workspace_id=ws, actor=audit.SYSTEM, action="backup.created", target="old").at = (
            utcnow() - dt.timedelta(days=40)
        )
        audit.record(s, workspace_id=ws, actor=audit.SYSTEM, action="backup.created", target="new")
    job = ReportJob(db, audit_retention_days=30)
    assert await job.prune_audit() == 1
    async with db.transaction() as s:
        from sqlalchemy import select

        left = (
            await s.execute(select(AuditEntry.target).where(AuditEntry.action == "backup.created"))
        ).scalars()
        assert list(left) == ["new"]

"""A web instance SIGKILLed in the middle of a campaign expansion: the next start takes the
expansion up from its cursor and every recipient gets exactly one message. (The same for a CSV
import: `tests/contacts/test_import_resume.py`.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from server.auth import service as auth_service
from server.auth.models import Role
from server.contacts.models import Contact
from server.db import Database, utcnow
from server.messages.campaigns import BATCH_SIZE
from server.messages.models import Campaign, Message
from tests.conftest import PASSWORD, until
from tests.ha.instances import kill_instance
from tests.ops.procs import BIN, env_for, free_port, running, wait_http

# Three batches, killed once the first is committed: the restart resumes from a cursor mid-way
# (with one batch, the first commit was the last, and a fast machine finished before the kill).
RECIPIENTS = 2 * BATCH_SIZE + 500


async def _campaign(db: Database, campaign_id: int) -> Campaign:
    async with db.transaction() as s:
        c = await s.get(Campaign, campaign_id)
        assert c is not None
        return c


@pytest.mark.timeout(90)
async def test_a_campaign_expansion_killed_mid_way_finishes_after_a_restart_with_one_message_each(
    pg_url: str, tmp_path: Path
) -> None:
    db = Database(pg_url)
    try:
        await _kill_and_restart(db, pg_url, tmp_path)
    finally:
        await db.dispose()


async def _kill_and_restart(db: Database, pg_url: str, tmp_path: Path) -> None:
    now = utcnow()
    async with db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name="Expansion")
        await auth_service.create_user(
            s, workspace_id=ws.id, email="agent@expansion.test", password=PASSWORD, role=Role.agent
        )
        await s.execute(
            insert(Contact),
            [
                {
                    "workspace_id": ws.id,
                    "name": f"Person {i}",
                    "email": f"p{i}@expansion.test",
                    "tags": ["all"],
                    "attributes": {},
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(RECIPIENTS)
            ],
        )
    env = env_for(pg_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "switchboard"), "serve", "--no-worker", "--port", str(port)]
    with running(argv, env=env, log=tmp_path / "serve-1.log") as web:
        await asyncio.to_thread(wait_http, f"{base}/healthz", proc=web, timeout_s=60)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            r = await c.post(
                "/api/v1/auth/login", json={"email": "agent@expansion.test", "password": PASSWORD}
            )
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            c.cookies.clear()
            body = {
                "name": "Hello",
                "channel": "email",
                "subject": "Hi {{ name }}",
                "body": "Hello {{ name }}!",
            }
            tpl = (await c.post("/api/v1/templates", json=body)).json()
            r = await c.post(
                "/api/v1/campaigns",
                json={"name": "All", "template_id": tpl["id"], "audience": {"tag": "all"}},
            )
            assert r.status_code == 202, r.text
            campaign_id = r.json()["id"]

        async def under_way() -> bool:
            return (await _campaign(db, campaign_id)).created > 0

        await until(under_way, within=30, what="the expansion under way")
        await asyncio.to_thread(kill_instance, web)
    killed = await _campaign(db, campaign_id)
    assert killed.status == "expanding" and killed.created < RECIPIENTS, "the kill came after the expansion"

    with running(argv, env=env, log=tmp_path / "serve-2.log") as web:
        await asyncio.to_thread(wait_http, f"{base}/healthz", proc=web, timeout_s=60)

        async def finished() -> Campaign | None:
            c = await _campaign(db, campaign_id)
            return c if c.status != "expanding" else None

        done = await until(finished, within=60, what="the expansion finished after the restart")
    async with db.transaction() as s:
        sent, distinct = (
            await s.execute(
                select(func.count(Message.id), func.count(func.distinct(Message.contact_id))).where(
                    Message.campaign_id == campaign_id
                )
            )
        ).one()
    print(f"\nkilled at {killed.created}/{RECIPIENTS} messages created; after the restart {done.created}")
    assert (done.status, done.created, done.total) == ("done", RECIPIENTS, RECIPIENTS)
    assert (sent, distinct) == (RECIPIENTS, RECIPIENTS)

"""SIGKILL a `switchboard serve` in the middle of an import; the next start resumes the job after
its last committed batch and every row ends imported exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
from sqlalchemy import func, select

from server.auth import service as auth_service
from server.auth.models import Role
from server.contacts.models import Audit, Contact, ImportJob
from server.db import Database
from tests.conftest import PASSWORD, until

ROWS = 10_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(pg_url: str, port: int, upload_dir: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_ENV="test",
        SWITCHBOARD_DATABASE_URL=pg_url,
        SWITCHBOARD_SECRET_KEY="resume-test-secret-" + "x" * 32,
        SWITCHBOARD_RATE_LIMIT_ENABLED="false",
        SWITCHBOARD_IMPORT_DIR=str(upload_dir),
        SWITCHBOARD_IMPORT_BATCH_ROWS="50",  # many small batches: the kill lands mid-import
        SWITCHBOARD_IMPORT_LEASE_S="2",  # the next start takes the dead one's job over soon
    )
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", "--no-worker", "--port", str(port),
            env=env, stdout=out, stderr=out,
        )  # fmt: skip

    async def answers() -> bool:
        assert proc.returncode is None, "switchboard serve exited (see serve.log)"
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await until(answers, within=30, what="switchboard serve answering")
    return proc


async def test_an_import_killed_mid_way_resumes_at_the_next_start_with_every_row_once(
    pg_url: str, tmp_path: Path
) -> None:
    db = Database(pg_url)
    async with db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name="Acme")
        await auth_service.create_user(
            s, workspace_id=ws.id, email="agent@acme.test", password=PASSWORD, role=Role.agent
        )
    body = "name,email\n" + "".join(f"Person {i},p{i}@x.test\n" for i in range(ROWS))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = await _serve(pg_url, port, tmp_path / "uploads", log)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            r = await c.post("/api/v1/auth/login", json={"email": "agent@acme.test", "password": PASSWORD})
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            r = await c.post("/api/v1/contacts/import", content=body, headers={"content-type": "text/csv"})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]

            async def under_way() -> bool:
                status = (await c.get(f"/api/v1/contacts/import/{job_id}")).json()
                assert status["status"] == "running", status
                return bool(status["processed"] >= 500)

            await until(under_way, within=60, what="the import under way")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        async with db.transaction() as s:
            killed = (await s.execute(select(ImportJob))).scalar_one()
        assert killed.status == "running" and 0 < killed.processed < ROWS
        assert await asyncio.to_thread(Path(killed.path or "").exists)

        proc = await _serve(pg_url, port, tmp_path / "uploads", log)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            c.headers["Authorization"] = f"Bearer {r.request.headers['Authorization'].split()[1]}"

            async def finished() -> dict[str, object] | None:
                status = (await c.get(f"/api/v1/contacts/import/{job_id}")).json()
                return status if status["status"] != "running" else None

            status = await until(finished, within=120, what="the resumed import finished")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    assert status["status"] == "done", status
    assert (status["processed"], status["created"], status["rejected_count"]) == (ROWS, ROWS, 0)
    async with db.transaction() as s:
        emails = (
            await s.execute(select(func.count(Contact.id), func.count(func.distinct(Contact.email))))
        ).one()
        created = (
            await s.execute(select(func.count()).select_from(Audit).where(Audit.field == "created"))
        ).scalar()
    await db.dispose()
    assert tuple(emails) == (ROWS, ROWS)
    assert created == ROWS
    assert not await asyncio.to_thread(Path(killed.path or "").exists)  # the upload is gone

"""`honcho start` runs the Procfile: a message sent through `web` is dispatched by `worker`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, _pg_admin, _unavailable, in_thread
from tests.ops.procs import BIN, ROOT, env_for, free_port, running, switchboard, wait_http

EMAIL = "ops@procfile.test"
DONE = {"sent", "delivered"}


def _worker_exists() -> bool:
    return (ROOT / "server" / "messages" / "worker.py").exists()


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own (the production shape: web and worker apart)."""
    name = f"sb_ops_{uuid.uuid4().hex[:8]}"
    try:
        in_thread(asyncio.run, _pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    in_thread(asyncio.run, _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_honcho_starts_web_and_worker_and_the_worker_dispatches(pg_database_url: str, tmp_path: Path) -> None:
    if not _worker_exists():
        pytest.skip("the dispatcher (server/messages/worker.py) is not on this branch yet")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker_metrics = free_port()
    env = env_for(
        pg_database_url, SWITCHBOARD_PUBLIC_URL=base, SWITCHBOARD_WORKER_METRICS_PORT=str(worker_metrics)
    )
    switchboard("migrate", env=env)
    switchboard("createuser", "--workspace", "Ops", "--email", EMAIL, "--password", PASSWORD, env=env)

    argv = [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "-d", str(ROOT), "start", "-p", str(port)]
    log = tmp_path / "honcho.log"
    with running(argv, env=env, log=log) as honcho:
        wait_http(f"{base}/healthz", proc=honcho, timeout_s=30)
        with httpx.Client(base_url=base, timeout=10) as c:
            r = c.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
            assert r.status_code == 200, r.text
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            r = c.post(
                "/api/v1/providers",
                json={"name": "Sandbox", "kind": "sandbox", "channel": "email", "priority": 1, "config": {}},
            )
            assert r.status_code == 201, r.text
            r = c.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})
            assert r.status_code == 201, r.text
            contact = r.json()["id"]
            r = c.post(
                "/api/v1/messages",
                json={"contact_id": contact, "channel": "email", "subject": "Hi", "body": "Hello {{ name }}"},
            )
            assert r.status_code == 202, r.text
            message = r.json()["id"]
            deadline = time.monotonic() + 20
            status = None
            while time.monotonic() < deadline:
                status = c.get(f"/api/v1/messages/{message}").json()["status"]
                if status in DONE:
                    break
                time.sleep(0.2)
            worker_scrape = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics").text
            web_scrape = c.get("/metrics").text
        output = log.read_text()
    assert status in DONE, f"message stayed {status}; honcho output:\n{output}"
    # Both process types ran under honcho; the worker (not web) did the sending.
    assert "web.1" in output and "worker.1" in output, output
    assert 'switchboard_dispatcher_outcomes_total{outcome="sent"} 1.0' in worker_scrape, worker_scrape
    # The web instance runs no dispatcher: it reports the queue from the database instead.
    assert "switchboard_dispatcher_outcomes_total" not in web_scrape
    assert "switchboard_dispatch_queue_depth 0.0" in web_scrape

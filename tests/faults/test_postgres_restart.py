"""Restart PostgreSQL under load: requests fail fast with 503 problem+json, then recover by themselves."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from server.app import create_app
from tests.conftest import alembic_upgrade, make_settings
from tests.faults.pgcluster import PgCluster


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    try:
        c = PgCluster()
    except (FileNotFoundError, OSError) as exc:
        pytest.skip(f"cannot run a private PostgreSQL: {exc}")
    c.start()
    try:
        yield c
    finally:
        c.destroy()


async def test_postgres_restart_under_load_gives_fast_503_then_recovers(cluster: PgCluster) -> None:
    alembic_upgrade(cluster.url)
    app = create_app(make_settings(cluster.url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as anon:
            from server.auth import service
            from server.auth.models import Role

            async with app.state.services.db.transaction() as s:
                ws = await service.get_or_create_workspace(s, name="Acme")
                await service.create_user(
                    s, workspace_id=ws.id, email="a@acme.test", password="pw-123456", role=Role.admin
                )
            token = (
                await anon.post("/api/v1/auth/login", json={"email": "a@acme.test", "password": "pw-123456"})
            ).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}

            statuses: Counter[int] = Counter()
            slowest_failure = 0.0
            stop = asyncio.Event()

            async def load(i: int) -> None:
                nonlocal slowest_failure
                n = 0
                while not stop.is_set():
                    n += 1
                    started = time.monotonic()
                    r = await anon.post(
                        "/api/v1/contacts",
                        json={"name": f"c{i}-{n}", "email": f"c{i}-{n}@acme.test"},
                        headers=headers,
                    )
                    statuses[r.status_code] += 1
                    if r.status_code != 201:
                        assert r.status_code == 503, r.text
                        assert r.headers["content-type"] == "application/problem+json"
                        assert r.headers["retry-after"]
                        slowest_failure = max(slowest_failure, time.monotonic() - started)
                        await asyncio.sleep(0.05)

            workers = [asyncio.create_task(load(i)) for i in range(4)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.stop, "immediate")
            await asyncio.sleep(1.5)
            down = statuses[503]
            await asyncio.to_thread(cluster.start)
            # Recovery without any intervention: new writes succeed again.
            ok_before = statuses[201]
            deadline = time.monotonic() + 20
            while statuses[201] < ok_before + 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*workers)

    assert down > 0, "no request saw the database down"
    assert statuses[201] >= ok_before + 20, f"did not recover: {statuses}"
    assert set(statuses) <= {201, 503}, statuses
    # Fail fast: no failed request hung for the connect timeout's worth of seconds.
    assert slowest_failure < 3.5, slowest_failure

"""PostgreSQL limits (statement timeout, pool) and reads from a streaming replica."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.db import Database
from tests.conftest import make_settings
from tests.faults.pgcluster import PgCluster
from tests.ops.conftest import AppFactory, sign_in

pytestmark = pytest.mark.postgres


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql")


async def test_a_statement_past_the_timeout_is_cancelled_and_answers_503(
    make_app: AppFactory, pg_url: str
) -> None:
    app = await make_app(pg_url, db_statement_timeout_ms=300)
    client = await sign_in(app)
    holder = await asyncpg.connect(_dsn(pg_url))
    try:
        # Another session holds the table: the request's query waits, until the timeout cancels it.
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE contact IN ACCESS EXCLUSIVE MODE")
        async with asyncio.timeout(10):
            r = await client.get("/api/v1/contacts")
        await tx.rollback()
    finally:
        await holder.close()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    # The pool is fine afterwards.
    assert (await client.get("/api/v1/contacts")).status_code == 200


async def test_the_statement_timeout_applies_to_the_app_only(pg_url: str) -> None:
    settings = make_settings(pg_url, db_statement_timeout_ms=1234, db_pool_size=3, db_max_overflow=1)
    db = Database.from_settings(settings)
    try:
        async with db.engine.connect() as conn:
            from sqlalchemy import text

            assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "1234ms"
        assert db.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        await db.dispose()
    # LISTEN (realtime.pglisten) and migrations connect without it.
    plain = await asyncpg.connect(_dsn(pg_url))
    try:
        assert await plain.fetchval("SHOW statement_timeout") == "0"
    finally:
        await plain.close()


@pytest.fixture
async def primary_and_replica() -> AsyncIterator[tuple[PgCluster, PgCluster]]:
    try:
        primary = PgCluster()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a PostgreSQL cluster: {exc}")
    replica: PgCluster | None = None
    try:
        primary.start()
        replica = PgCluster(replica_of=primary)
        replica.start()
        yield primary, replica
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()


async def test_reports_and_exports_read_from_the_replica(
    make_app: AppFactory, primary_and_replica: tuple[PgCluster, PgCluster]
) -> None:
    from tests.conftest import alembic_upgrade, in_thread

    primary, replica = primary_and_replica
    in_thread(alembic_upgrade, primary.url)
    app = await make_app(primary.url, database_replica_url=replica.url)
    client = await sign_in(app)
    r = await client.post("/api/v1/contacts", json={"name": "On the primary", "email": "p@example.test"})
    assert r.status_code == 201, r.text

    standby = await asyncpg.connect(_dsn(replica.url))
    try:
        assert await standby.fetchval("SELECT pg_is_in_recovery()")

        async def replayed(name: str) -> None:
            # Streaming replication is asynchronous: wait until the standby has replayed the insert.
            async with asyncio.timeout(10):
                while not await standby.fetchval("SELECT count(*) FROM contact WHERE name = $1", name):
                    await asyncio.sleep(0.1)

        await replayed("On the primary")
        # Stop replay on the standby: what is written now is on the primary only.
        await standby.execute("SELECT pg_wal_replay_pause()")
        r = await client.post("/api/v1/contacts", json={"name": "Not replayed", "email": "n@example.test"})
        assert r.status_code == 201, r.text
        listed = await client.get("/api/v1/contacts")
        assert "Not replayed" in listed.text  # the API's own reads: the primary

        export = await client.get("/api/v1/contacts/export", params={"format": "ndjson"})
        assert export.status_code == 200
        assert "On the primary" in export.text and "Not replayed" not in export.text  # the replica
        assert (await client.get("/api/v1/messages/export")).status_code == 200
        assert (await client.get("/api/v1/reports/daily")).status_code == 200

        await standby.execute("SELECT pg_wal_replay_resume()")
        await replayed("Not replayed")
        export = await client.get("/api/v1/contacts/export", params={"format": "ndjson"})
        assert "Not replayed" in export.text
    finally:
        await standby.close()

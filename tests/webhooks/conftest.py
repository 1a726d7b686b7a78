"""A migrated database per test (SQLite, and PostgreSQL when reachable) for the webhook service."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server.db import Database

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


async def _pg_reachable() -> bool:
    engine = create_async_engine(PG_ADMIN)
    try:
        async with engine.connect():
            return True
    except Exception:
        return False
    finally:
        await engine.dispose()


async def _migrate(db: Database) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("path_separator", "os")
    async with db.engine.begin() as conn:

        def upgrade(sync_conn: object) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        await conn.run_sync(upgrade)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def webhook_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'webhooks.db'}")
        await _migrate(db)
        yield db
        await db.dispose()
        return
    if not await _pg_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"sb_webhooks_{secrets.token_hex(4)}"
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", pool_size=5, max_overflow=5)
    try:
        await _migrate(db)
        yield db
    finally:
        await db.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.backup import BackupError, backup, restore
from server.db import Database
from server.models import Base
from server.settings import Settings
from tests.conftest import make_settings


async def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    db = Database(url)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        async with db.transaction() as s:
            for table in Base.metadata.sorted_tables:
                rows = await s.execute(select(table).order_by(*table.primary_key.columns))
                out[table.name] = [tuple(r) for r in rows]
        return out
    finally:
        await db.dispose()


async def test_backup_and_restore_round_trip_restores_every_row(
    client: httpx.AsyncClient, settings: Settings, app: Any, tmp_path: Path
) -> None:
    for i in range(25):
        r = await client.post(
            "/api/v1/contacts",
            json={
                "name": f"Person {i}",
                "email": f"p{i}@example.test",
                "attributes": {"n": i},
                "tags": ["t"],
            },
        )
        assert r.status_code == 201
    r = await client.patch("/api/v1/contacts/1", json={"name": "Renamed"})
    assert r.status_code == 200
    before = await snapshot(settings.database_url)
    assert len(before["contact"]) == 25 and len(before["audit"]) > 25 and len(before["event"]) == 26

    file = tmp_path / "switchboard.backup"
    await backup(settings, file)
    assert file.stat().st_size > 0

    # Change things after the backup: delete, add, edit.
    assert (await client.delete("/api/v1/contacts/2")).status_code == 204
    assert (
        await client.post("/api/v1/contacts", json={"name": "Late", "email": "late@example.test"})
    ).status_code == 201
    assert (await client.patch("/api/v1/contacts/3", json={"tags": ["changed"]})).status_code == 200
    assert await snapshot(settings.database_url) != before

    await restore(settings, file)
    assert await snapshot(settings.database_url) == before

    # The restored database keeps working: new ids do not collide with the restored rows.
    r = await client.post("/api/v1/contacts", json={"name": "After", "email": "after@example.test"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] > 25


async def test_missing_backup_file_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no backup at"):
        await restore(settings, tmp_path / "nope.backup")


async def test_postgres_errors_name_the_tool(tmp_path: Path) -> None:
    bad = make_settings("postgresql+asyncpg://postgres@127.0.0.1:5432/sb_ops_does_not_exist")
    with pytest.raises(BackupError, match="pg_dump failed"):
        await backup(bad, tmp_path / "x.backup")


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    import sqlite3

    from tests.ops.procs import env_for, switchboard

    db_file = tmp_path / "cli.db"
    env = env_for(f"sqlite+aiosqlite:///{db_file}")
    switchboard("migrate", env=env)
    switchboard(
        "createuser", "--workspace", "Ops", "--email", "a@ops.test", "--password", "pw-123456789", env=env
    )
    out = switchboard("backup", str(tmp_path / "cli.backup"), env=env)
    assert "backup written" in out
    switchboard(
        "createuser", "--workspace", "Ops", "--email", "b@ops.test", "--password", "pw-123456789", env=env
    )
    switchboard("restore", str(tmp_path / "cli.backup"), env=env)
    with sqlite3.connect(db_file) as conn:
        assert [r[0] for r in conn.execute("SELECT email FROM user_account")] == ["a@ops.test"]

    import subprocess

    from tests.ops.procs import BIN

    r = subprocess.run(
        [str(BIN / "switchboard"), "restore", str(tmp_path / "missing.backup")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "no backup at" in r.stderr and "Traceback" not in r.stderr

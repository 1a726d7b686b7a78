"""`switchboard backup FILE` / `restore FILE`.

PostgreSQL goes through `pg_dump -Fc` / `pg_restore --clean --if-exists` (Debian's
postgresql-client; its major version must be at least the server's). SQLite uses its online
backup API, which copies a consistent snapshot while the app keeps writing."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from server.settings import Settings


class BackupError(Exception):
    pass


def _sqlite_path(settings: Settings) -> str:
    path = make_url(settings.database_url).database
    if not path or path == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return path


def _copy_sqlite(source: str, target: str) -> None:
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _pg_env_and_args(settings: Settings) -> tuple[dict[str, str], list[str]]:
    """libpq connection options from the SQLAlchemy URL; the password goes in the environment,
    never on a command line that `ps` shows."""
    url = make_url(settings.database_url)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    args = ["--no-password"]
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    args += ["--dbname", url.database or "postgres"]
    return env, args


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the postgresql-client package")
    return found


async def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        name = Path(argv[0]).name
        raise BackupError(f"{name} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")


async def backup(settings: Settings, path: str | os.PathLike[str]) -> None:
    """Write the whole database (the audit log included) to `path`; each workspace's audit log
    then records the backup (after it succeeded, so the file holds every entry but its own)."""
    target = os.fspath(path)
    if settings.is_sqlite:
        source = _sqlite_path(settings)
        if not os.path.exists(source):  # noqa: ASYNC240 (one stat)
            raise BackupError(f"no database at {source}")
        await asyncio.to_thread(_copy_sqlite, source, target)
    else:
        env, args = _pg_env_and_args(settings)
        await _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--file", target, *args], env)
    await _record_backup(settings, target)


async def _record_backup(settings: Settings, target: str) -> None:
    from sqlalchemy import select

    from server.audit import service as audit
    from server.db import Database
    from server.workspaces.models import Workspace

    db = Database(settings.database_url)
    try:
        async with db.transaction() as s:
            for ws_id in (await s.execute(select(Workspace.id))).scalars():
                audit.record(
                    s,
                    workspace_id=ws_id,
                    actor=audit.SYSTEM,
                    action="backup.created",
                    details={"file": os.path.basename(target)},
                )
    finally:
        await db.dispose()


async def restore(settings: Settings, path: str | os.PathLike[str]) -> None:
    """Replace the database's contents with the backup's. Stop the app and workers first."""
    source = os.fspath(path)
    if not os.path.exists(source):  # noqa: ASYNC240 (one stat)
        raise BackupError(f"no backup at {source}")
    if settings.is_sqlite:
        await asyncio.to_thread(_copy_sqlite, source, _sqlite_path(settings))
        return
    env, args = _pg_env_and_args(settings)
    await _run(
        [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction", *args, source],
        env,
    )

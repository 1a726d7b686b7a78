"""Alembic from code: upgrade to head, and tell whether a database is at head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent


def _config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str) -> None:
    """Bring the database to the newest revision (idempotent). Blocking: it runs its own loop."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_config(url), "head")


def head(url: str) -> str | None:
    return ScriptDirectory.from_config(_config(url)).get_current_head()


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def include_object_for(dialect: str) -> Any:
    """The `include_object` hook for a connection of `dialect`: indexes the models mark
    `info={"dialects": (…)}` (server/contacts/models.py) are not expected on other databases."""

    def include(obj: Any, _name: str | None, type_: str, _reflected: bool, _compare_to: Any) -> bool:
        dialects = obj.info.get("dialects") if type_ == "index" and obj is not None else None
        return dialects is None or dialect in dialects

    return include

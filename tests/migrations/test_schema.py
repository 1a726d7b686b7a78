"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from server.db import Database
from server.migrate import include_object_for
from server.models import Base


def differences(conn: Connection) -> list[Any]:
    with warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (lower(email)); alembic says so and skips them.
        warnings.simplefilter("ignore")
        context = MigrationContext.configure(
            conn, opts={"include_object": include_object_for(conn.dialect.name)}
        )
        return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_matches_the_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(differences)
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("message_event"))
    finally:
        await db.dispose()
    assert diff == []
    assert "ix_message_event_at" in {ix["name"] for ix in indexes}

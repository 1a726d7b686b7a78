"""Database engine, sessions and the declarative base shared by every domain's models."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from server.settings import Settings

# JSON on SQLite, JSONB on PostgreSQL (indexable, comparable).
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        # asyncpg reads timestamptz as an aware UTC datetime already: no call per value (exports
        # read two per row, a tenth of their reading time).
        if dialect.driver == "asyncpg":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_engine(url: str, *, statement_timeout_ms: int = 0, **kwargs: Any) -> AsyncEngine:
    """`statement_timeout_ms` (PostgreSQL): cancel any statement running longer (0: never)."""
    if url.startswith("sqlite"):
        for pg_only in ("pool_size", "max_overflow", "pool_timeout"):
            kwargs.pop(pg_only, None)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own is deferred).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock at BEGIN so two writers queue instead of failing on upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # Fail fast while the database is down (503 at once), recover by itself when it is back.
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", 3)
    if statement_timeout_ms:
        # asyncpg sends it with the start-up packet: no extra round trip per connection.
        settings = connect_args.setdefault("server_settings", {})
        settings.setdefault("statement_timeout", str(statement_timeout_ms))
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("pool_timeout", 5)
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping: it costs a round trip per transaction. A connection broken by a database restart
    # fails its request with a 503 and invalidates the pool, so the next request reconnects.
    kwargs.setdefault("pool_pre_ping", False)
    return create_async_engine(url, **kwargs)


def engine_options(settings: Settings) -> dict[str, Any]:
    """The app's engines' limits from the settings (`SWITCHBOARD_DB_*`)."""
    return {
        "statement_timeout_ms": settings.db_statement_timeout_ms,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
    }


class Database:
    """The engine and session factory owned by one app (or CLI command)."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> Database:
        """The app's database (or, with `url`, its read replica) with the configured limits."""
        return cls(url or settings.database_url, **engine_options(settings))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One session, one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def dialect_of(session: AsyncSession) -> str:
    """The dialect name of a session's connection ("postgresql" or "sqlite")."""
    bind = session.get_bind()
    return str(bind.dialect.name)


def one_of(dialect: str, column: Any, values: Sequence[Any], type_: Any) -> Any:
    """`column IN (values)`; on PostgreSQL `= ANY(array)`: one parameter whatever the number of
    values, so the statement is compiled and prepared once rather than once per length (an IN list
    of 2,000 ids costs more to render than to run)."""
    from sqlalchemy import any_, bindparam
    from sqlalchemy.dialects.postgresql import ARRAY

    if dialect == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(type_)))
    return column.in_(values)


def json_array_contains(session_dialect: str, column: Any, value: str) -> Any:
    """A WHERE clause: the JSON array in `column` holds the string `value`."""
    from sqlalchemy import exists, func, literal, select, type_coerce

    if session_dialect == "postgresql":
        # jsonb @> '["value"]', served by the GIN index
        return type_coerce(column, JSONB()).contains([value])
    each = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == value))

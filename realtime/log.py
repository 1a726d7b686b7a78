"""The realtime layer's own engine for reading the event log on PostgreSQL (the queries are the
application's `EventLog`, see realtime.types)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


class LogReader:
    """An engine of the layer's own for reading the log on PostgreSQL: the relay holds a
    connection for its life and hubs read on every sweep, so they stay off the app's pool."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(url, pool_size=2, max_overflow=6, pool_pre_ping=True)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()

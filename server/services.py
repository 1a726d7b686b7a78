"""What one app (or one CLI command) owns: settings, database, Redis, background components.

Kept on `app.state.services`, never in module globals, so tests can run many apps side by side."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.auth.tokens import TokenCodec
from server.db import Database
from server.settings import Settings

log = logging.getLogger("switchboard")


class Component(Protocol):
    """A background part of the process (relay, dispatcher, …): started and stopped with it."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    db: Database
    tokens: TokenCodec
    redis: Any = None  # redis.asyncio.Redis when SWITCHBOARD_REDIS_URL is set
    components: list[Component] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    # Set after a commit that queued send-now messages; an in-process dispatcher waits on it.
    dispatch_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def create(cls, settings: Settings) -> Services:
        redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=10)
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            tokens=TokenCodec(settings.secret_key, settings.access_token_ttl_s),
            redis=redis,
        )

    async def start(self) -> None:
        for c in self.components:
            await c.start()

    async def stop(self) -> None:
        for c in reversed(self.components):
            try:
                await c.stop()
            except Exception:
                log.exception("stopping %r failed", c)
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()

    async def check_ready(self) -> dict[str, str]:
        """Each dependency: "ok" or the reason it is not."""
        from sqlalchemy import text

        out: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                async with self.db.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            out["database"] = "ok"
        except Exception as exc:
            out["database"] = f"unreachable: {exc.__class__.__name__}"
        if self.redis is not None:
            try:
                async with asyncio.timeout(2):
                    await self.redis.ping()
                out["redis"] = "ok"
            except Exception as exc:
                out["redis"] = f"unreachable: {exc.__class__.__name__}"
        return out

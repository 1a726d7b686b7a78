"""Waking the dispatcher at once for send-now messages, instead of waiting for its slow poll.

Inside the transaction that queues messages call `notify_dispatch(session)`: on PostgreSQL that is a
NOTIFY delivered at commit to every worker process. After commit, call `services.dispatch_wakeup.set()`
(through `wake_local`) so a dispatcher inside this process (embedded mode, SQLite) runs now too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import dialect_of

if TYPE_CHECKING:
    from server.services import Services

DISPATCH_CHANNEL = "switchboard_dispatch"


async def notify_dispatch(session: AsyncSession) -> None:
    if dialect_of(session) == "postgresql":
        await session.execute(text("SELECT pg_notify(:c, '')"), {"c": DISPATCH_CHANNEL})


def wake_local(services: Services) -> None:
    services.dispatch_wakeup.set()

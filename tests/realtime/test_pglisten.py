"""`pg_listen()`: the one LISTEN loop (relay, dispatcher, deliverer), on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from realtime.pglisten import asyncpg_dsn, pg_listen
from tests.conftest import until


async def _backends(dsn: str, name: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


async def _sql(dsn: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_wakes_on_notify_and_reconnects_after_its_connection_is_killed(pg_database: str) -> None:
    dsn = asyncpg_dsn(pg_database)
    channel = f"sb_test_{uuid.uuid4().hex[:8]}"
    name = f"test listen {channel}"
    woken: list[str | None] = []
    task = asyncio.create_task(
        pg_listen(pg_database, channel, woken.append, poll_s=0.05, application_name=name)
    )
    try:
        await until(lambda: None in woken, what="the catch-up wake-up after connecting")
        await _sql(dsn, "SELECT pg_notify($1, '42')", channel)
        await until(lambda: "42" in woken, what="the NOTIFY")

        [pid] = await _backends(dsn, name)
        woken.clear()
        await _sql(dsn, "SELECT pg_terminate_backend($1)", pid)
        # Down: the caller is woken to poll, then the connection comes back (a new backend).
        await until(lambda: None in woken, what="a poll wake-up while down")

        async def reconnected() -> bool:
            pids = await _backends(dsn, name)
            return bool(pids) and pids != [pid]

        await until(reconnected, what="a new LISTEN connection")
        await asyncio.sleep(0.1)  # LISTEN is issued right after connecting
        await _sql(dsn, "SELECT pg_notify($1, '7')", channel)
        await until(lambda: "7" in woken, what="a NOTIFY on the new connection")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def closed() -> bool:
        return await _backends(dsn, name) == []

    await until(closed, what="the connection closed on cancel")


async def test_polls_while_postgresql_cannot_be_reached() -> None:
    woken: list[str | None] = []
    # Nothing listens on port 1: every connect fails at once, and the caller is woken to poll.
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/none"
    task = asyncio.create_task(pg_listen(url, "sb_nowhere", woken.append, poll_s=0.05, retry_max_s=0.2))
    try:
        await until(lambda: len(woken) >= 5, within=5, what="poll wake-ups")
        assert set(woken) == {None}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

"""`pg_listen()`: the one PostgreSQL LISTEN loop of the process's components.

Used by the outbox relay (events committed), the dispatcher (messages queued) and the
outgoing-webhook deliverer (events committed). Each runs it as a supervised loop:

    supervisor.spawn("relay-listen", lambda: pg_listen(url, CHANNEL, on_wake))

`on_wake(payload)` is called with the NOTIFY payload for each notification, and with `None`
when the caller should look at everything: after each (re)connect (what committed while nobody
listened) and every `poll_s` while the connection is down (the poll fallback). The connection is
its own (never the app's pool), probed every `probe_s` so a dead socket is noticed rather than
waited on for ever, and re-opened with a backoff. Notifications are only a fast path: each
caller also polls slowly on its own, so a lost NOTIFY costs latency, never an event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("switchboard.pglisten")

PROBE_S = 15.0  # keep-alive: a SELECT 1 this often shows a dead socket
CONNECT_TIMEOUT_S = 5.0
RETRY_S = 0.2
RETRY_MAX_S = 10.0
POLL_S = 1.0  # while disconnected, the caller is woken this often


def asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://…` (SQLAlchemy) → `postgresql://…` (asyncpg)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_listen(
    url: str,
    channel: str,
    on_wake: Callable[[str | None], None],
    *,
    probe_s: float = PROBE_S,
    poll_s: float = POLL_S,
    retry_max_s: float = RETRY_MAX_S,
    application_name: str | None = None,
) -> None:
    """LISTEN on `channel` for ever (until cancelled); see the module docstring."""
    import asyncpg

    dsn = asyncpg_dsn(url)
    # Named, so an operator (or a test) can find the connection in pg_stat_activity.
    settings = {"application_name": application_name or f"switchboard listen {channel}"}
    delay = RETRY_S
    while True:
        conn: Any = None
        lost = asyncio.Event()
        try:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S, server_settings=settings)
            conn.add_termination_listener(lambda *_, lost=lost: lost.set())
            await conn.add_listener(channel, lambda _c, _pid, _ch, payload: on_wake(payload))
            on_wake(None)  # catch up with what committed while nobody listened
            delay = RETRY_S
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), probe_s)
                except TimeoutError:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        await conn.execute("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("LISTEN %s lost (%s: %s); polling meanwhile", channel, exc.__class__.__name__, exc)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()
        if lost.is_set():
            log.warning("LISTEN %s connection closed; reconnecting", channel)
        # Down: wake the caller every `poll_s` until the connection is back.
        waited = 0.0
        while waited < delay:
            step = min(poll_s, delay - waited)
            await asyncio.sleep(step)
            waited += step
            on_wake(None)
        delay = min(delay * 2, retry_max_s)

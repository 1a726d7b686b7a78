"""The real-time layer of one web process: owns the backend, relay, hub and presence.

The app adds it to its components (started and stopped in the lifespan) and mounts `routes`;
serving `rt.wrap(app)` also answers /ws before the middleware stack (about 6 KiB less per socket):

    rt = Realtime(settings, db, authenticate=authenticate, log=SqlEventLog(), redis=client)
    services.components.append(rt); routes += rt.routes
    asgi = rt.wrap(app)                           # what uvicorn serves

It imports nothing from `server`: the app hands it the database, its event log, how to
authenticate a connection and the process's Redis client (see realtime.types)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from realtime import guard, http, websocket
from realtime.backend import Backend, RedisBackend, create_backend
from realtime.hub import Hub
from realtime.lifecycle import Supervisor
from realtime.log import LogReader
from realtime.presence import Key, MemoryStore, Presence, RedisStore
from realtime.relay import Relay
from realtime.types import AccessCheck, Authenticator, Database, Event, EventLog, OpBudget

log = logging.getLogger("switchboard.realtime")

PRUNE_EVERY_S = 600.0  # the retention is hours: pruning every ten minutes keeps the log near it


class RealtimeSettings(Protocol):
    """The settings the layer reads (`server.settings.Settings` has them all)."""

    @property
    def redis_url(self) -> str | None: ...
    @property
    def presence_ttl_s(self) -> float: ...
    @property
    def ws_ping_interval_s(self) -> float: ...
    @property
    def ws_send_buffer(self) -> int: ...
    @property
    def event_retention_hours(self) -> float: ...
    @property
    def longpoll_max_timeout_s(self) -> float: ...
    @property
    def extra_origins(self) -> Any: ...
    @property
    def ws_access_recheck_s(self) -> float: ...
    @property
    def ws_max_message_bytes(self) -> int: ...
    @property
    def ws_ops_burst(self) -> int: ...
    @property
    def ws_ops_per_s(self) -> float: ...
    @property
    def ws_replay_max_events(self) -> int: ...
    @property
    def ws_replays_per_min(self) -> int: ...


class Realtime:
    def __init__(
        self,
        settings: RealtimeSettings,
        db: Database,
        *,
        authenticate: Authenticator,
        log: EventLog,
        access_check: AccessCheck | None = None,
        op_budget: OpBudget | None = None,
        backend: Backend | None = None,
        redis: Any = None,
        prefix: str = "sb:",
        relay: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.log = log
        self.authenticate: Authenticator = authenticate
        # Asked again while a socket or stream stays open; None: access never ends (tests).
        self.access_check = access_check
        self.op_budget = op_budget  # per caller across sockets; None: only the per-socket budget
        self.backend = backend or create_backend(settings.redis_url, prefix=prefix, client=redis)
        # PostgreSQL: reads on an engine of their own (the relay holds a connection for its life).
        # SQLite: the app's engine, whose connections are already open.
        self.reader: LogReader | None = LogReader(db.url) if db.dialect == "postgresql" else None
        self.relay = Relay(db, self.backend, log=log, reader=self.reader) if relay else None
        self.hub = Hub(self.reader or db, self.backend, log=log)
        self.presence = Presence(db, MemoryStore(), log=log, ttl_s=settings.presence_ttl_s, on_emit=self.poke)
        self.connections: set[websocket.Connection] = set()
        self.streams: set[http.Stream] = set()  # SSE streams and waiting long-polls
        self.recheck_now = asyncio.Event()  # wakes the access sweep (a revocation note arrived)
        # Recent "yes" answers for connections being opened (realtime.guard).
        self.admissions = guard.Admissions(min(guard.ADMIT_TTL_S, settings.ws_access_recheck_s))
        self.hub.on_note(guard.ACCESS_NOTE, lambda data: guard.access_ended(self, data))
        self.hub.observe(self._on_batch)
        self.supervisor = Supervisor("realtime")

    def health(self) -> dict[str, str]:
        """The layer's loops that are down (empty when all run)."""
        out: dict[str, str] = {}
        for sup in (self.supervisor, self.hub.supervisor, self.presence.supervisor):
            out.update(sup.health())
        if self.relay is not None:
            out.update(self.relay.supervisor.health())
        return out

    async def access_ended(
        self, *, api_key_id: int | None = None, user_id: int | None = None, session_ids: Iterable[str] = ()
    ) -> None:
        """Call after committing a revocation (a key, sign-ins, a user): every process, this one
        included, checks the connections standing on it at once instead of at the next sweep.
        Never raises: the revocation is committed, and the sweep is the fallback."""
        named = guard.marks(api_key_id=api_key_id, user_id=user_id, session_ids=session_ids)
        if not named:
            return
        self.admissions.forget(named)  # here at once; the note may take a moment to come back
        try:
            await self.backend.note(guard.ACCESS_NOTE, orjson.dumps(sorted(named)))
        except Exception:
            log.warning(
                "announcing a revocation failed; its connections close at their next check", exc_info=True
            )

    def _on_batch(self, _workspace_id: int, events: list[Event] | None) -> None:
        if events is None:
            self.admissions.clear()  # the hub's subscription was made again: notes may have been missed

    def poke(self, workspace_id: int | None = None) -> None:
        """Call after committing events to publish them at once (PostgreSQL also NOTIFYs)."""
        if self.relay is not None:
            self.relay.poke(workspace_id)

    @property
    def routes(self) -> list[BaseRoute]:
        async def events(request: Request) -> Response:
            return await http.longpoll(self, request)

        async def stream(request: Request) -> Response:
            return await http.stream(self, request)

        return [
            WebSocketRoute("/ws", websocket.Endpoint(self)),
            Route("/api/v1/events", events, methods=["GET"]),
            Route("/api/v1/events/stream", stream, methods=["GET"]),
        ]

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app`, with `/ws` served before its middleware (saves memory per idle socket).
        Starlette sets `scope["app"]` for the routes it serves; here we set it to `app`."""
        endpoint = websocket.Endpoint(self)

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket" and scope["path"] == "/ws":
                scope.setdefault("app", app)
                await endpoint(scope, receive, send)
            else:
                await app(scope, receive, send)

        return asgi

    async def start(self) -> None:
        await self.backend.connect()
        if isinstance(self.backend, RedisBackend):
            # Presence shares the backend's connection pool and key prefix.
            self.presence.store = RedisStore(self.backend.client, self.backend.prefix)
        await self.hub.start()
        if self.relay is not None:
            await self.relay.start()
        await self.presence.start()
        self.supervisor.spawn("ws-ping", self._tick)
        self.supervisor.spawn("event-retention", self._prune)
        self.supervisor.spawn("ws-access", lambda: guard.recheck_forever(self))

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.presence.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.hub.stop()
        await self.backend.disconnect()
        if self.reader is not None:
            await self.reader.dispose()

    async def _tick(self) -> None:
        """One timer for every socket: the app-level ping, and presence refreshes."""
        while True:
            await asyncio.sleep(self.settings.ws_ping_interval_s)
            keys: list[Key] = []
            for conn in list(self.connections):
                conn.send(websocket.PING)
                keys.extend(conn.presence_keys())
            try:
                await self.presence.refresh(keys)
            except Exception:
                log.exception("refreshing presence failed")

    async def prune_once(self) -> int:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=self.settings.event_retention_hours)
        async with self.db.transaction() as session:
            return await self.log.prune(session, cutoff)

    async def _prune(self) -> None:
        while True:
            # First after a while, not at start-up: a process that starts and stops at once
            # (a CLI command, a test) should not be caught in the middle of a large DELETE.
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                removed = await self.prune_once()
                if removed:
                    log.info("pruned %d events older than %gh", removed, self.settings.event_retention_hours)
            except Exception:
                log.exception("pruning the event log failed")

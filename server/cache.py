"""Cache-aside for rows read on hot paths (contacts and templates for the dispatcher's rendering,
board rows): an in-process LRU with a TTL per kind, kept on the app (`services.caches`).

Invariants:
* A value is stored only if nothing invalidated its key while it was being loaded, and never
  over a newer version: a slow reader cannot put back a row that a writer just replaced.
* `min_version` lets a caller that knows a version (the client's last write, an event) refuse
  anything older: it is then read from the database.
* Every instance drops changed keys: writers call `invalidate` after their commit (this instance
  at once, the others through a note on the broadcast backend), and each instance also follows
  the committed change events the realtime relay publishes (`contact.*` carry the new version).
  Both arrive through the realtime hub, the process's one listener: the cache opens no
  subscription of its own.

    contact = await services.caches.contacts.get_or_load(ws_id, contact_id, load)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from cachetools import TTLCache

from server.metrics import Metrics
from server.settings import Settings

if TYPE_CHECKING:
    from realtime.backend import Backend
    from realtime.hub import Hub
    from realtime.types import Event

log = logging.getLogger("switchboard.cache")

Key = tuple[int, int]  # (workspace id, row id)
KINDS = ("contact", "template")
_generation = itertools.count(1)


class EntityCache:
    """One kind of row. Values are stored with their version (0 when the kind has none)."""

    def __init__(self, kind: str, *, size: int, ttl_s: float, metrics: Metrics) -> None:
        self.kind = kind
        self._values: TTLCache[Key, tuple[int, Any]] = TTLCache(maxsize=size, ttl=ttl_s)
        # Per key: the generation of its last invalidation and the newest version known to exist.
        # Kept twice as long as values so an in-flight load still sees an invalidation.
        self._gens: TTLCache[Key, int] = TTLCache(maxsize=size, ttl=ttl_s * 2)
        self._floors: TTLCache[Key, int] = TTLCache(maxsize=size, ttl=ttl_s * 2)
        self._hits = metrics.cache_requests.labels(kind=kind, result="hit")
        self._misses = metrics.cache_requests.labels(kind=kind, result="miss")

    def get(self, workspace_id: int, id: int, *, min_version: int = 0) -> Any | None:
        key = (workspace_id, id)
        entry = self._values.get(key)
        if entry is None or entry[0] < max(min_version, self._floors.get(key, 0)):
            self._misses.inc()
            return None
        self._hits.inc()
        return entry[1]

    async def get_or_load(
        self,
        workspace_id: int,
        id: int,
        load: Callable[[], Awaitable[Any | None]],
        *,
        version_of: Callable[[Any], int] = lambda v: int(getattr(v, "version", 0)),
        min_version: int = 0,
    ) -> Any | None:
        """The cached value, or `await load()` (stored unless it changed meanwhile)."""
        value = self.get(workspace_id, id, min_version=min_version)
        if value is not None:
            return value
        key = (workspace_id, id)
        gen = self._gens.get(key)
        value = await load()
        if value is not None and self._gens.get(key) == gen:
            self.put(workspace_id, id, value, version=version_of(value))
        return value

    def put(self, workspace_id: int, id: int, value: Any, *, version: int = 0) -> None:
        key = (workspace_id, id)
        if version < self._floors.get(key, 0):
            return
        current = self._values.get(key)
        if current is not None and current[0] > version:
            return
        self._values[key] = (version, value)

    def drop(self, workspace_id: int, id: int, *, version: int | None = None) -> None:
        """Forget a key on this instance; `version`, when known, is the newest that exists."""
        key = (workspace_id, id)
        self._values.pop(key, None)
        self._gens[key] = next(_generation)
        if version is not None and version > self._floors.get(key, 0):
            self._floors[key] = version

    def clear(self) -> None:
        for key in list(self._values.keys()):
            self.drop(*key)

    def __len__(self) -> int:
        return len(self._values)


class Caches:
    """The app's caches and their cross-instance invalidation (built by the composition root)."""

    NOTE = "cache"  # the kind of backend note that carries an explicit invalidation

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        s = settings
        self.contacts = EntityCache("contact", size=s.cache_size, ttl_s=s.cache_ttl_s, metrics=metrics)
        self.templates = EntityCache("template", size=s.cache_size, ttl_s=s.cache_ttl_s, metrics=metrics)
        self._backend: Backend | None = None
        # Set once invalidations from other instances arrive (the hub's subscription is live).
        self.listening = asyncio.Event()

    def of(self, kind: str) -> EntityCache:
        if kind == "contact":
            return self.contacts
        if kind == "template":
            return self.templates
        raise ValueError(f"unknown cache kind {kind!r}")

    def follow(self, hub: Hub, backend: Backend) -> None:
        """Follow committed change events and other instances' invalidations through `hub`."""
        from realtime.backend import MemoryBackend

        self._backend = None if isinstance(backend, MemoryBackend) else backend
        hub.observe(self._on_batch)
        hub.on_note(self.NOTE, self._on_note)
        if self._backend is None:
            self.listening.set()  # one process: nothing to wait for

    async def invalidate(self, kind: str, workspace_id: int, id: int, *, version: int | None = None) -> None:
        """Call after committing a change: drops the key here now and on every other instance."""
        self.of(kind).drop(workspace_id, id, version=version)
        if self._backend is not None:
            message = orjson.dumps({"kind": kind, "ws": workspace_id, "id": id, "version": version})
            await self._backend.note(self.NOTE, message)

    def apply_event(self, workspace_id: int, envelope: dict[str, Any]) -> None:
        """Drop what a committed change event says changed (contact.* carry the new version)."""
        kind, _, _ = str(envelope.get("type", "")).partition(".")
        data = envelope.get("data") or {}
        if kind == "contact" and data.get("contact_id") is not None:
            version = data.get("version")
            self.contacts.drop(
                workspace_id, int(data["contact_id"]), version=int(version) if version else None
            )
        elif kind == "template" and data.get("template_id") is not None:
            self.templates.drop(workspace_id, int(data["template_id"]))

    def _on_batch(self, workspace_id: int, events: list[Event] | None) -> None:
        if events is None:
            # The hub's subscription was (re)made: anything may have changed meanwhile.
            for cache in (self.contacts, self.templates):
                cache.clear()
            self.listening.set()
            return
        for event in events:
            if event.type.startswith(("contact.", "template.")):
                self.apply_event(workspace_id, event.envelope())

    def _on_note(self, data: bytes) -> None:
        body = orjson.loads(data)
        self.of(body["kind"]).drop(int(body["ws"]), int(body["id"]), version=body.get("version"))

"""Cache-aside for rows read on hot paths (contacts and templates for the dispatcher's rendering,
board rows): an in-process LRU with a TTL per kind, kept on the app (`caches_of(services)`).

Invariants:
* A value is stored only if nothing invalidated its key while it was being loaded, and never
  over a newer version: a slow reader cannot put back a row that a writer just replaced.
* `min_version` lets a caller that knows a version (the client's last write, an event) refuse
  anything older: it is then read from the database.
* Every instance drops changed keys: writers call `invalidate` after their commit (this instance
  at once, the others through Redis), and with Redis each instance also follows the committed
  change events the realtime relay publishes (`contact.*` carry the new version).

    contact = await caches_of(services).contacts.get_or_load(ws_id, contact_id, load)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cachetools import TTLCache

from server.metrics import metrics_of

log = logging.getLogger("switchboard.cache")

Key = tuple[int, int]  # (workspace id, row id)
KINDS = ("contact", "template")
_generation = itertools.count(1)


class EntityCache:
    """One kind of row. Values are stored with their version (0 when the kind has none)."""

    def __init__(self, kind: str, *, size: int, ttl_s: float, metrics: Any) -> None:
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
    """The app's caches and their cross-instance invalidation (a component of the app)."""

    def __init__(self, services: Any) -> None:
        s = services.settings
        metrics = metrics_of(services)
        self.contacts = EntityCache("contact", size=s.cache_size, ttl_s=s.cache_ttl_s, metrics=metrics)
        self.templates = EntityCache("template", size=s.cache_size, ttl_s=s.cache_ttl_s, metrics=metrics)
        self._redis = services.redis
        self._prefix = s.redis_prefix
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set once the Redis subscriptions are live

    @property
    def channel(self) -> str:
        return f"{self._prefix}cache:invalidate"

    def of(self, kind: str) -> EntityCache:
        if kind == "contact":
            return self.contacts
        if kind == "template":
            return self.templates
        raise ValueError(f"unknown cache kind {kind!r}")

    async def invalidate(self, kind: str, workspace_id: int, id: int, *, version: int | None = None) -> None:
        """Call after committing a change: drops the key here now and on every other instance."""
        self.of(kind).drop(workspace_id, id, version=version)
        if self._redis is not None:
            message = orjson.dumps({"kind": kind, "ws": workspace_id, "id": id, "version": version})
            await self._redis.publish(self.channel, message)

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

    def follow(self, backend: Any) -> Any:
        """The realtime broadcast backend to use. Without Redis (one process) it is wrapped so
        every batch the relay publishes also passes through here; with Redis each instance
        follows the published batches on its own subscription instead."""
        if self._redis is not None:
            return backend
        return _Tee(backend, self._on_batch)

    def _on_batch(self, workspace_id: int, data: bytes) -> None:
        from realtime.wire import decode_batch

        for event in decode_batch(workspace_id, data):
            if event.type.startswith(("contact.", "template.")):
                self.apply_event(workspace_id, orjson.loads(event.payload))

    async def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._listen(), name="cache-invalidation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _on_message(self, msg: dict[str, Any]) -> None:
        channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
        if channel == self.channel:
            body = orjson.loads(msg["data"])
            self.of(body["kind"]).drop(int(body["ws"]), int(body["id"]), version=body.get("version"))
            return
        # A batch of committed events from the realtime relay, on `{prefix}ws:{workspace id}`.
        self._on_batch(int(channel[len(self._prefix) + 3 :]), msg["data"])

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        try:
            import realtime.wire  # noqa: F401

            follow_events = True
        except ImportError:
            follow_events = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if follow_events:
                    await pubsub.psubscribe(f"{self._prefix}ws:*")
                # Anything may have changed while we were not listening.
                for cache in (self.contacts, self.templates):
                    cache.clear()
                self.listening.set()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                    if msg is not None and msg["type"] in ("message", "pmessage"):
                        try:
                            self._on_message(msg)
                        except Exception:
                            log.exception("bad cache invalidation message on %r", msg.get("channel"))
            except (RedisError, OSError) as exc:
                self.listening.clear()
                log.warning("cache invalidation subscription lost (%s); reconnecting", exc.__class__.__name__)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass


class _Tee:
    """A broadcast backend that also hands each published batch to a callback (in-process)."""

    def __init__(self, inner: Any, on_batch: Callable[[int, bytes], None]) -> None:
        self._inner = inner
        self._on_batch = on_batch

    async def publish(self, batches: list[tuple[int, bytes]], cursors: dict[int, int]) -> None:
        await self._inner.publish(batches, cursors)
        for workspace_id, data in batches:
            try:
                self._on_batch(workspace_id, data)
            except Exception:
                log.exception("cache invalidation from a published batch failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def caches_of(services: Any) -> Caches:
    """The app's Caches (made on first use; the app factory also adds it to the components)."""
    c = services.extras.get("caches")
    if c is None:
        c = services.extras["caches"] = Caches(services)
    return c

"""The broadcast backend between web processes: `memory://` (one process) or `redis://`.

The interface is small on purpose: the relay publishes batches (one round trip per batch,
with its cursors recorded in the same transaction), and each process holds ONE pattern
subscription to every workspace channel for its whole life (opened in the app's lifespan),
so no per-socket or per-channel subscription ever races another. Small out-of-band messages
between processes (`note()`, e.g. the cache's explicit invalidations) travel on that same
subscription: one listener per process.

Decision (docs/decisions.md): this is our own small interface, not `broadcaster`'s, because the
relay needs what broadcaster does not offer: a publish that records cursors atomically, a lease,
a RESET when messages may have been missed, and a client shared with the rest of the process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger("switchboard.realtime")


class Reset:
    """Yielded by `listen()` when messages may have been missed (reconnect or overflow):
    the hub then backfills every workspace it follows from the event log."""

    __slots__ = ()


RESET = Reset()
Message = tuple[int, bytes]  # (workspace id, batch)
# With Sentinel, how often the subscription checks that it still listens to the primary (a
# demoted primary accepts SUBSCRIBE and never answers READONLY to it; Sentinel normally kills
# its pub/sub clients, this catches the case where it could not).
CHECK_PRIMARY_S = 5.0


class Note:
    """Yielded by `listen()`: an out-of-band message published with `note(kind, data)`."""

    __slots__ = ("data", "kind")

    def __init__(self, kind: str, data: bytes) -> None:
        self.kind = kind
        self.data = data


class Backend(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def publish(self, batches: list[Message], cursors: dict[int, int]) -> None:
        """Publish every batch and record the relay's cursors, atomically where possible."""

    async def load_cursors(self) -> dict[int, int]: ...
    async def hold_lease(self, token: str, ttl_s: float) -> bool:
        """Take or renew the relay lease; True while `token` holds it."""

    async def note(self, kind: str, data: bytes) -> None:
        """Send `data` to every process's listener (this one included), as a `Note`."""

    def listen(self) -> AsyncIterator[Message | Reset | Note]: ...


def create_backend(url: str | None, *, prefix: str = "sb:", client: Any = None) -> Backend:
    """`memory://` when no URL is given; `redis://…`, `rediss://…` or `redis+sentinel://…`
    otherwise. With Redis, `client` is the process's one `redis.asyncio.Redis` (made from `url`
    only when not given)."""
    if not url or url.startswith("memory://"):
        return MemoryBackend()
    if url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")):
        if client is None:
            from realtime.redisconn import connect_redis

            return RedisBackend(connect_redis(url), prefix=prefix, owns_client=True)
        return RedisBackend(client, prefix=prefix)
    raise ValueError(f"Unsupported broadcast URL scheme: {url.split(':', 1)[0]!r}")


class MemoryBackend:
    """In-process: for the embedded default and tests. A bounded queue; on overflow the
    listener is told to reset instead of the queue growing without limit."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[Message | Reset | Note] = asyncio.Queue(maxsize)
        self._cursors: dict[int, int] = {}
        self._overflowed = False

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def publish(self, batches: list[Message], cursors: dict[int, int]) -> None:
        for item in batches:
            if self._overflowed:
                break
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                self._overflowed = True
        self._cursors.update(cursors)

    async def load_cursors(self) -> dict[int, int]:
        return dict(self._cursors)

    async def hold_lease(self, token: str, ttl_s: float) -> bool:
        return True

    async def note(self, kind: str, data: bytes) -> None:
        try:
            self._queue.put_nowait(Note(kind, data))
        except asyncio.QueueFull:
            self._overflowed = True

    async def listen(self) -> AsyncIterator[Message | Reset | Note]:
        while True:
            item = await self._queue.get()
            yield item
            if self._overflowed and self._queue.empty():
                self._overflowed = False
                yield RESET


# Renew only our own lease.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class RedisBackend:
    """Redis pub/sub, one channel per workspace (`{prefix}ws:{id}`) and one for notes
    (`{prefix}note`), on the process's Redis client (closed here only if `owns_client`)."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "sb:",
        retry_s: float = 0.5,
        check_s: float = CHECK_PRIMARY_S,
        owns_client: bool = False,
    ) -> None:
        self.prefix = prefix
        self.retry_s = retry_s
        self.check_s = check_s
        self._client: Any = client
        self._owns_client = owns_client
        self._cursors_key = f"{prefix}relay:cursors"
        self._lease_key = f"{prefix}relay:lease"
        self._note_channel = f"{prefix}note"

    @property
    def client(self) -> Any:
        """The redis.asyncio client."""
        return self._client

    def channel(self, workspace_id: int) -> str:
        return f"{self.prefix}ws:{workspace_id}"

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def note(self, kind: str, data: bytes) -> None:
        await self._client.publish(self._note_channel, kind.encode() + b"\t" + data)

    async def publish(self, batches: list[Message], cursors: dict[int, int]) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            for workspace_id, data in batches:
                pipe.publish(self.channel(workspace_id), data)
            if cursors:
                pipe.hset(self._cursors_key, mapping={str(k): v for k, v in cursors.items()})
            await pipe.execute()

    async def load_cursors(self) -> dict[int, int]:
        raw = await self._client.hgetall(self._cursors_key)
        return {int(k): int(v) for k, v in raw.items()}

    async def hold_lease(self, token: str, ttl_s: float) -> bool:
        held = await self._client.eval(_RENEW, 1, self._lease_key, token, int(ttl_s * 1000))
        return bool(held)

    async def listen(self) -> AsyncIterator[Message | Reset | Note]:
        from redis.exceptions import ReadOnlyError, RedisError

        from realtime.redisconn import stale_subscription

        loop = asyncio.get_running_loop()
        pattern = f"{self.prefix}ws:*"
        start = len(self.prefix) + 3
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                await pubsub.subscribe(self._note_channel)
                # Wait for both confirmations so nothing published after RESET is missed.
                confirmed = 0
                while confirmed < 2:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg["type"] in ("psubscribe", "subscribe"):
                        confirmed += 1
                yield RESET
                checked = loop.time()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.check_s)
                    if loop.time() - checked >= self.check_s:
                        checked = loop.time()
                        if await stale_subscription(self._client, pubsub.connection):
                            # Subscribed to a demoted primary: it would stay silent for ever.
                            raise ReadOnlyError("subscribed to a server that is no longer the primary")
                    if msg is None:
                        continue
                    if msg["type"] == "pmessage":
                        yield int(msg["channel"][start:]), msg["data"]
                    elif msg["type"] == "message":
                        kind, _, data = msg["data"].partition(b"\t")
                        yield Note(kind.decode(), data)
            except (RedisError, OSError) as exc:  # ReadOnlyError included: a demoted primary
                log.warning("broadcast subscription lost (%s); reconnecting", exc.__class__.__name__)
                await asyncio.sleep(self.retry_s)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

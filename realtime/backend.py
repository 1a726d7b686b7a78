"""The broadcast backend between web processes: `memory://` (one process) or `redis://`.

The interface is small on purpose: the relay publishes batches (one round trip per batch,
with its cursors recorded in the same transaction), and each process holds ONE pattern
subscription to every workspace channel for its whole life (opened in the app's lifespan),
so no per-socket or per-channel subscription ever races another."""

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


class Backend(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def publish(self, batches: list[Message], cursors: dict[int, int]) -> None:
        """Publish every batch and record the relay's cursors, atomically where possible."""

    async def load_cursors(self) -> dict[int, int]: ...
    async def hold_lease(self, token: str, ttl_s: float) -> bool:
        """Take or renew the relay lease; True while `token` holds it."""

    def listen(self) -> AsyncIterator[Message | Reset]: ...


def create_backend(url: str | None, *, prefix: str = "sb:") -> Backend:
    """`memory://` when no URL is given; `redis://…` / `rediss://…` otherwise."""
    if not url or url.startswith("memory://"):
        return MemoryBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBackend(url, prefix=prefix)
    raise ValueError(f"Unsupported broadcast URL scheme: {url.split(':', 1)[0]!r}")


class MemoryBackend:
    """In-process: for the embedded default and tests. A bounded queue; on overflow the
    listener is told to reset instead of the queue growing without limit."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[Message | Reset] = asyncio.Queue(maxsize)
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

    async def listen(self) -> AsyncIterator[Message | Reset]:
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
    """Redis pub/sub, one channel per workspace (`{prefix}ws:{id}`)."""

    def __init__(self, url: str, *, prefix: str = "sb:", retry_s: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.retry_s = retry_s
        self._client: Any = None
        self._cursors_key = f"{prefix}relay:cursors"
        self._lease_key = f"{prefix}relay:lease"

    @property
    def client(self) -> Any:
        """The redis.asyncio client (after connect)."""
        return self._client

    def channel(self, workspace_id: int) -> str:
        return f"{self.prefix}ws:{workspace_id}"

    async def connect(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(self.url, socket_connect_timeout=2, socket_keepalive=True)

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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

    async def listen(self) -> AsyncIterator[Message | Reset]:
        from redis.exceptions import RedisError

        pattern = f"{self.prefix}ws:*"
        start = len(self.prefix) + 3
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                # Wait for the confirmation so nothing published after RESET is missed.
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg["type"] == "psubscribe":
                        break
                yield RESET
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                    if msg is None or msg["type"] != "pmessage":
                        continue
                    yield int(msg["channel"][start:]), msg["data"]
            except (RedisError, OSError) as exc:
                log.warning("broadcast subscription lost (%s); reconnecting", exc.__class__.__name__)
                await asyncio.sleep(self.retry_s)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

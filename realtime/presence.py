"""Presence: who views or edits which contact, across web processes.

Decision: presence changes are written to the event log as `presence` events (topic
`contact:{id}`), like any other event. They are rare (a human opening or leaving a form), and so
they reach WebSocket, long-poll and SSE clients of every process with the same ordering and
resume guarantees, through the same relay. Refreshes (every ping) are not events. The live
state lives in Redis with an expiry (or in memory in the embedded default): a socket that
closes announces `left`; one that stops answering is closed by the server's ping timeout; an
entry whose process died expires, and whichever process removes it first announces `left`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from realtime.lifecycle import Supervisor
from realtime.types import Database, EventLog

log = logging.getLogger("switchboard.realtime")

STATES = ("viewing", "editing", "left")
CONVERSATION_STATES = ("replying", "left")  # agents in a conversation (DESIGN §8)
# (workspace, subject, user). The subject is a contact id, or minus a conversation id: one store,
# one expiry loop and one event path serve both kinds (see `conversation_key`).
Key = tuple[int, int, int]


def conversation_key(workspace_id: int, conversation_id: int, user_id: int) -> Key:
    return (workspace_id, -conversation_id, user_id)


class Store(Protocol):
    async def put(self, key: Key, state: str, ttl_s: float) -> bool:
        """Set the state; True when it differs from what was there."""

    async def remove(self, key: Key) -> bool: ...
    async def refresh(self, keys: list[Key], ttl_s: float) -> None: ...
    async def take_expired(self) -> list[Key]:
        """Remove and return expired entries (each to exactly one caller)."""

    async def list(self, workspace_id: int, contact_id: int) -> dict[int, str]: ...


class MemoryStore:
    def __init__(self) -> None:
        self._entries: dict[Key, tuple[str, float]] = {}

    async def put(self, key: Key, state: str, ttl_s: float) -> bool:
        old = self._entries.get(key)
        self._entries[key] = (state, time.monotonic() + ttl_s)
        return old is None or old[0] != state

    async def remove(self, key: Key) -> bool:
        return self._entries.pop(key, None) is not None

    async def refresh(self, keys: list[Key], ttl_s: float) -> None:
        until = time.monotonic() + ttl_s
        for k in keys:
            if k in self._entries:
                self._entries[k] = (self._entries[k][0], until)

    async def take_expired(self) -> list[Key]:
        now = time.monotonic()
        gone = [k for k, (_, until) in self._entries.items() if until <= now]
        for k in gone:
            del self._entries[k]
        return gone

    async def list(self, workspace_id: int, contact_id: int) -> dict[int, str]:
        return {k[2]: s for k, (s, _) in self._entries.items() if k[:2] == (workspace_id, contact_id)}


# Remove a member only if it is still expired, so one process announces each expiry.
_TAKE = """
local score = redis.call('zscore', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('zrem', KEYS[1], ARGV[1])
  redis.call('hdel', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


class RedisStore:
    """`{prefix}presence:{ws}:{contact}` hash of user → state, and one sorted set of expiries."""

    def __init__(self, client: Any, prefix: str = "sb:") -> None:
        self.client = client
        self.prefix = prefix
        self._exp = f"{prefix}presence:expiry"

    def _hash(self, ws: int, contact: int) -> str:
        return f"{self.prefix}presence:{ws}:{contact}"

    async def put(self, key: Key, state: str, ttl_s: float) -> bool:
        ws, contact, user = key
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hget(self._hash(ws, contact), str(user))
            pipe.hset(self._hash(ws, contact), str(user), state)
            pipe.zadd(self._exp, {f"{ws}:{contact}:{user}": time.time() + ttl_s})
            old, *_ = await pipe.execute()
        return old is None or old.decode() != state

    async def remove(self, key: Key) -> bool:
        ws, contact, user = key
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._hash(ws, contact), str(user))
            pipe.zrem(self._exp, f"{ws}:{contact}:{user}")
            removed, *_ = await pipe.execute()
        return bool(removed)

    async def refresh(self, keys: list[Key], ttl_s: float) -> None:
        if keys:
            until = time.time() + ttl_s
            await self.client.zadd(self._exp, {f"{w}:{c}:{u}": until for w, c, u in keys}, xx=True)

    async def take_expired(self) -> list[Key]:
        now = time.time()
        out: list[Key] = []
        for member in await self.client.zrangebyscore(self._exp, 0, now, start=0, num=500):
            ws, contact, user = (int(p) for p in member.decode().split(":"))
            if await self.client.eval(_TAKE, 2, self._exp, self._hash(ws, contact), member, now, str(user)):
                out.append((ws, contact, user))
        return out

    async def list(self, workspace_id: int, contact_id: int) -> dict[int, str]:
        raw = await self.client.hgetall(self._hash(workspace_id, contact_id))
        return {int(k): v.decode() for k, v in raw.items()}


class Presence:
    def __init__(
        self,
        db: Database,
        store: Store,
        *,
        log: EventLog,
        ttl_s: float,
        on_emit: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.log = log
        self.store = store
        self.ttl_s = ttl_s
        self.on_emit = on_emit
        self._names: dict[tuple[int, int], str] = {}
        self.supervisor = Supervisor("presence")

    async def announce(self, key: Key, state: str) -> None:
        """Record the state of (workspace, contact, user); emit a `presence` event if it changed."""
        if state == "left":
            changed = await self.store.remove(key)
        else:
            changed = await self.store.put(key, state, self.ttl_s)
        if changed:
            await self._emit(key, state)

    async def refresh(self, keys: list[Key]) -> None:
        await self.store.refresh(keys, self.ttl_s)

    async def _emit(self, key: Key, state: str) -> None:
        ws, contact, user = key
        async with self.db.transaction() as session:
            name = self._names.get((ws, user))
            if name is None:
                name = await self.log.user_name(session, ws, user)
                self._names[(ws, user)] = name
            if contact < 0:  # a conversation's presence: topic `inbox` (realtime.topics)
                data = {"conversation_id": -contact, "user_id": user, "user_name": name, "state": state}
                await self.log.emit(session, ws, "presence", data, contact_id=None)
            else:
                data = {"contact_id": contact, "user_id": user, "user_name": name, "state": state}
                await self.log.emit(session, ws, "presence", data, contact_id=contact)
        if self.on_emit is not None:
            self.on_emit(ws)

    async def start(self) -> None:
        self.supervisor.spawn("presence-expiry", self._expire)

    async def stop(self) -> None:
        await self.supervisor.stop()

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.ttl_s / 4))
            try:
                for key in await self.store.take_expired():
                    await self._emit(key, "left")
            except Exception:
                log.exception("expiring presence failed")

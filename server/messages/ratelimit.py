"""Token buckets that keep each provider under its `send_rate` (messages per second).

A bucket holds up to one second of sends (at least one). `reserve` takes a token now and answers how
long to wait before using it: waiters queue up in order instead of all retrying at once, and a caller
that will not wait that long hands the token back with `cancel`. In-process by default; shared by
every worker through one Lua script call when Redis is configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol


class RateLimiter(Protocol):
    async def reserve(self, key: str, rate: float) -> float:
        """Take one token; seconds to wait before sending (0 when one was there)."""
        ...

    async def cancel(self, key: str, rate: float) -> None:
        """Give back a token taken by `reserve` and not used."""
        ...


log = logging.getLogger("switchboard.dispatcher")


def capacity(rate: float) -> float:
    return max(1.0, rate)


class LocalRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _take(self, key: str, rate: float, n: float) -> float:
        now = self.clock()
        cap = capacity(rate)
        tokens, at = self._buckets.get(key, (cap, now))
        tokens = min(cap, tokens + (now - at) * rate) - n
        self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / rate

    async def reserve(self, key: str, rate: float) -> float:
        return self._take(key, rate, 1)

    async def cancel(self, key: str, rate: float) -> None:
        self._take(key, rate, -1)


# KEYS[1]: the bucket hash; ARGV: rate (tokens/s), capacity, tokens to take (-1 gives one back).
# Redis's own clock, so workers on different hosts agree. Returns the wait in seconds, as a string
# (a Lua number would come back truncated to an integer).
_LUA = """
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or cap
local at = tonumber(state[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * rate) - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate * 1000) + 1000)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


class RedisRateLimiter:
    """Shared buckets. While Redis is unreachable each process keeps its own bucket instead: sends go
    on at up to (workers * rate) rather than stopping, and a warning says so."""

    def __init__(self, redis: Any, prefix: str = "switchboard:rate:") -> None:
        self.prefix = prefix
        self._script = redis.register_script(_LUA)
        self._local = LocalRateLimiter()
        self._degraded = False

    async def _call(self, key: str, rate: float, n: int) -> float:
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            wait = float(await self._script(keys=[self.prefix + key], args=[rate, capacity(rate), n]))
        except (ConnectionError, TimeoutError, OSError) as exc:
            if not self._degraded:
                log.warning("rate limits: Redis unreachable (%s); using per-process buckets meanwhile", exc)
                self._degraded = True
            return self._local._take(key, rate, n)
        if self._degraded:
            log.info("rate limits: Redis is back; buckets shared again")
            self._degraded = False
        return wait

    async def reserve(self, key: str, rate: float) -> float:
        return await self._call(key, rate, 1)

    async def cancel(self, key: str, rate: float) -> None:
        await self._call(key, rate, -1)


def make_rate_limiter(redis: Any | None) -> RateLimiter:
    return RedisRateLimiter(redis) if redis is not None else LocalRateLimiter()

"""API rate limits: token buckets per user, per client IP, and stricter ones for sign-in.

A request is checked against every bucket that applies to it at once and consumes a token from
each only when all of them have one. With Redis that is ONE Lua script call per request (atomic
across every web instance); on the embedded default an in-process bucket does the same."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from server.settings import Settings

log = logging.getLogger("switchboard.ratelimit")

WARN_EVERY_S = 30.0  # one warning per outage window, not one per request


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: `burst` tokens at most, refilled at `per_s` tokens a second."""

    name: str
    burst: int
    per_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    bucket: str  # the bucket that decided: the one that refused, or the one with fewest tokens left
    limit: int
    remaining: int
    reset_s: int  # seconds until that bucket is full again
    retry_after_s: int  # seconds until a token is available (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.retry_after_s))
        return out


Check = tuple[str, Bucket]  # (key, bucket), e.g. ("user:42", user bucket)


class Limiter(Protocol):
    async def hit(self, checks: list[Check]) -> Decision | None:
        """The decision, or None when the limiter cannot decide (Redis down): then fail open."""


def _decide(checks: list[Check], levels: list[float], allowed: bool) -> Decision:
    """Pick the bucket to report from the token levels seen before this hit."""
    if not allowed:
        # The refusing bucket that needs the longest wait.
        waits = [
            ((1 - lv) / b.per_s if lv < 1 else 0.0, i)
            for i, ((_, b), lv) in enumerate(zip(checks, levels, strict=True))
        ]
        wait, i = max(waits)
        b, lv = checks[i][1], levels[i]
        return Decision(False, b.name, b.burst, 0, math.ceil((b.burst - lv) / b.per_s), math.ceil(wait))
    after = [lv - 1 for lv in levels]
    i = min(range(len(checks)), key=lambda j: after[j])
    b = checks[i][1]
    return Decision(
        True, b.name, b.burst, max(0, math.floor(after[i])), math.ceil((b.burst - after[i]) / b.per_s), 0
    )


class MemoryLimiter:
    """In-process buckets for one web instance (the embedded default). Bounded: the least
    recently used keys are dropped past `max_keys` (a dropped key comes back full, as Redis's do)."""

    def __init__(self, *, max_keys: int = 100_000, clock: Any = time.monotonic) -> None:
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, checks: list[Check]) -> Decision:
        now = self._clock()
        levels: list[float] = []
        for key, b in checks:
            tokens, ts = self._state.get(key, (float(b.burst), now))
            levels.append(min(float(b.burst), tokens + (now - ts) * b.per_s))
        allowed = all(lv >= 1 for lv in levels)
        for (key, _), lv in zip(checks, levels, strict=True):
            self._state[key] = (lv - 1 if allowed else lv, now)
            self._state.move_to_end(key)
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)
        return _decide(checks, levels, allowed)


# KEYS: one per bucket. ARGV: burst and per-second rate for each key, in order.
# Time comes from the Redis server, so instances with skewed clocks agree.
# Returns {allowed, level_1 * 1000, level_2 * 1000, ...} (levels before this hit, in milli-tokens:
# Lua numbers come back from Redis as integers).
_TOKEN_BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local levels = {}
local allowed = 1
for i = 1, n do
  local burst = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(s[1])
  local ts = tonumber(s[2])
  if tokens == nil then
    tokens = burst
    ts = now
  end
  local level = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  levels[i] = level
  if level < 1 then allowed = 0 end
end
local out = {allowed}
for i = 1, n do
  local burst = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local level = levels[i]
  if allowed == 1 then level = level - 1 end
  redis.call('HSET', KEYS[i], 'tokens', tostring(level), 'ts', now)
  -- Gone once it would be full again anyway.
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - level) / rate * 1000) + 1000)
  out[i + 1] = math.floor(levels[i] * 1000)
end
return out
"""


class RedisLimiter:
    """Buckets shared by every instance, one atomic script call per request."""

    def __init__(self, redis: Any, *, prefix: str = "sb:") -> None:
        self._script = redis.register_script(_TOKEN_BUCKETS)
        self._prefix = f"{prefix}rl:"
        self._warned_at = 0.0

    async def hit(self, checks: list[Check]) -> Decision | None:
        from redis.exceptions import RedisError

        keys = [self._prefix + key for key, _ in checks]
        args: list[Any] = []
        for _, b in checks:
            args += [b.burst, repr(float(b.per_s))]
        try:
            out = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            # An outage of Redis must not take the API down with it: let requests through.
            now = time.monotonic()
            if now - self._warned_at > WARN_EVERY_S:
                self._warned_at = now
                log.warning("rate limiter unavailable (%s): not limiting", exc.__class__.__name__)
            return None
        levels = [int(v) / 1000 for v in out[1:]]
        return _decide(checks, levels, bool(int(out[0])))


@dataclass(frozen=True, slots=True)
class Buckets:
    user: Bucket
    ip: Bucket
    login_ip: Bucket
    login_email: Bucket

    @classmethod
    def from_settings(cls, s: Settings) -> Buckets:
        login = (s.rate_limit_login_burst, s.rate_limit_login_per_s)
        return cls(
            user=Bucket("user", s.rate_limit_user_burst, s.rate_limit_user_per_s),
            ip=Bucket("ip", s.rate_limit_ip_burst, s.rate_limit_ip_per_s),
            login_ip=Bucket("login_ip", *login),
            login_email=Bucket("login_email", *login),
        )


@dataclass
class RateLimits:
    """The app's limiter and bucket sizes (`services.ratelimits`)."""

    enabled: bool
    limiter: Limiter
    buckets: Buckets


def make_rate_limits(settings: Settings, redis: Any | None) -> RateLimits:
    """Built once by the composition root (`server.services.build_services`)."""
    limiter: Limiter = (
        RedisLimiter(redis, prefix=settings.redis_prefix) if redis is not None else MemoryLimiter()
    )
    return RateLimits(settings.rate_limit_enabled, limiter, Buckets.from_settings(settings))

"""The one rate-limit engine: token buckets for API clients, sign-in failures and provider send rates.

Every bucket is a key `{redis_prefix}rl:{kind}:{id}` holding a token level and the time it was seen.
One primitive serves every use, in one Lua script (shared by every instance through Redis) and one
in-process equivalent (the embedded default):

- `hit(checks)`: take one token from every bucket or from none (an API request, a sign-in check);
  `hit(checks, cost=0)` only looks.
- `charge(checks)`: take one token from each, going into debt if empty (a failed sign-in).
- `reserve(key, bucket)`: take one token, possibly into debt, and answer how long to wait before using
  it (a provider send: waiters queue up in order instead of all retrying at once); `cancel` gives it back.

On a Redis outage the API checks fail open (a warning every 30 s) and send rates carry on with a bucket
per process (a warning once, and a note when Redis is back): an outage of Redis never stops either."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from server.settings import Settings

log = logging.getLogger("switchboard.ratelimit")

WARN_EVERY_S = 30.0  # one warning per outage window, not one per request


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: `burst` tokens at most, refilled at `per_s` tokens a second."""

    name: str
    burst: float
    per_s: float


def send_rate_bucket(rate: float) -> Bucket:
    """A provider's bucket: one second of sends (at least one)."""
    return Bucket("send_rate", max(1.0, rate), rate)


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
    async def hit(self, checks: list[Check], *, cost: int = 1) -> Decision | None:
        """Take `cost` tokens from every bucket if each has one, else from none. None when the
        limiter cannot decide (Redis down): then fail open."""
        ...

    async def charge(self, checks: list[Check]) -> None:
        """Take one token from every bucket, into debt if need be (best effort while Redis is down)."""
        ...

    async def reserve(self, key: str, bucket: Bucket) -> float:
        """Take one token; seconds to wait before using it (0 when one was there)."""
        ...

    async def cancel(self, key: str, bucket: Bucket) -> None:
        """Give back a token taken by `reserve` and not used."""
        ...


def _decide(checks: list[Check], levels: list[float], allowed: bool, cost: int) -> Decision:
    """Pick the bucket to report from the token levels seen before this hit."""
    if not allowed:
        # The refusing bucket that needs the longest wait.
        waits = [
            ((1 - lv) / b.per_s if lv < 1 else 0.0, i)
            for i, ((_, b), lv) in enumerate(zip(checks, levels, strict=True))
        ]
        wait, i = max(waits)
        b, lv = checks[i][1], levels[i]
        return Decision(False, b.name, int(b.burst), 0, math.ceil((b.burst - lv) / b.per_s), math.ceil(wait))
    after = [lv - cost for lv in levels]
    i = min(range(len(checks)), key=lambda j: after[j])
    b = checks[i][1]
    return Decision(
        True,
        b.name,
        int(b.burst),
        max(0, math.floor(after[i])),
        math.ceil((b.burst - after[i]) / b.per_s),
        0,
    )


def _wait(level: float, bucket: Bucket) -> float:
    """Seconds until the token just reserved from a bucket that had `level` tokens is really there."""
    return 0.0 if level >= 1 else (1 - level) / bucket.per_s


class _Engine:
    """The uses, written once over `_apply` (the script, or its in-process twin)."""

    async def _apply(
        self, checks: list[Check], *, cost: float, strict: bool, degrade: bool
    ) -> tuple[bool, list[float]] | None:
        """Refill, then take `cost` from each bucket: only if all have a token when `strict`,
        unconditionally otherwise. Answers (taken, levels before) or None if it cannot decide."""
        raise NotImplementedError

    async def hit(self, checks: list[Check], *, cost: int = 1) -> Decision | None:
        got = await self._apply(checks, cost=cost, strict=True, degrade=False)
        return None if got is None else _decide(checks, got[1], got[0], cost)

    async def charge(self, checks: list[Check]) -> None:
        await self._apply(checks, cost=1, strict=False, degrade=False)

    async def reserve(self, key: str, bucket: Bucket) -> float:
        got = await self._apply([(key, bucket)], cost=1, strict=False, degrade=True)
        assert got is not None  # degrading never gives up
        return _wait(got[1][0], bucket)

    async def cancel(self, key: str, bucket: Bucket) -> None:
        await self._apply([(key, bucket)], cost=-1, strict=False, degrade=True)


class MemoryLimiter(_Engine):
    """In-process buckets for one process (the embedded default, and Redis's stand-in while it is
    down). Bounded: the least recently used keys are dropped past `max_keys` (a dropped key comes
    back full, as Redis's expired ones do)."""

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._max_keys = max_keys
        self._clock = clock

    def apply(self, checks: list[Check], *, cost: float, strict: bool) -> tuple[bool, list[float]]:
        now = self._clock()
        levels: list[float] = []
        for key, b in checks:
            tokens, at = self._state.get(key, (b.burst, now))
            levels.append(min(b.burst, tokens + max(0.0, now - at) * b.per_s))
        taken = not strict or all(lv >= 1 for lv in levels)
        for (key, b), lv in zip(checks, levels, strict=True):
            self._state[key] = (min(b.burst, lv - cost) if taken else lv, now)
            self._state.move_to_end(key)
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)
        return taken, levels

    async def _apply(
        self, checks: list[Check], *, cost: float, strict: bool, degrade: bool
    ) -> tuple[bool, list[float]] | None:
        return self.apply(checks, cost=cost, strict=strict)


# KEYS: one per bucket. ARGV: cost, strict (1: all or none), then burst and rate for each key in order.
# Time comes from the Redis server, so instances with skewed clocks agree. Returns
# {taken, level_1, level_2, ...}: levels before this call, as strings (a Lua number would come back
# from Redis truncated to an integer).
_TOKEN_BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local strict = ARGV[2] == '1'
local n = #KEYS
local levels = {}
local taken = 1
for i = 1, n do
  local burst = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens = tonumber(s[1]) or burst
  local at = tonumber(s[2]) or now
  local level = math.min(burst, tokens + math.max(0, now - at) * rate)
  levels[i] = level
  if strict and level < 1 then taken = 0 end
end
local out = {taken}
for i = 1, n do
  local burst = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local level = levels[i]
  if taken == 1 then level = math.min(burst, level - cost) end
  redis.call('HSET', KEYS[i], 'tokens', level, 'at', now)
  -- Gone once it would be full again anyway.
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - level) / rate * 1000) + 1000)
  out[i + 1] = string.format('%.17g', levels[i])
end
return out
"""


class RedisLimiter(_Engine):
    """Buckets shared by every instance, one atomic script call per use."""

    def __init__(self, redis: Any, *, prefix: str = "sb:") -> None:
        self._script = redis.register_script(_TOKEN_BUCKETS)
        self.prefix = f"{prefix}rl:"
        self._local = MemoryLimiter()  # stands in for send rates while Redis is unreachable
        self._warned_at = 0.0
        self._degraded = False

    async def _apply(
        self, checks: list[Check], *, cost: float, strict: bool, degrade: bool
    ) -> tuple[bool, list[float]] | None:
        from redis.exceptions import RedisError

        keys = [self.prefix + key for key, _ in checks]
        args: list[Any] = [repr(float(cost)), 1 if strict else 0]
        for _, b in checks:
            args += [repr(float(b.burst)), repr(float(b.per_s))]
        try:
            out = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            return self._unavailable(exc, checks, cost=cost, strict=strict, degrade=degrade)
        if self._degraded:
            log.info("rate limits: Redis is back; buckets shared again")
            self._degraded = False
        return bool(int(out[0])), [float(v) for v in out[1:]]

    def _unavailable(
        self, exc: BaseException, checks: list[Check], *, cost: float, strict: bool, degrade: bool
    ) -> tuple[bool, list[float]] | None:
        if degrade:
            # Sends go on at up to (processes * rate) rather than stopping.
            if not self._degraded:
                log.warning(
                    "rate limits: Redis unreachable (%s); using per-process buckets meanwhile",
                    exc.__class__.__name__,
                )
                self._degraded = True
            return self._local.apply(checks, cost=cost, strict=strict)
        # An outage of Redis must not take the API down with it: let requests through.
        now = time.monotonic()
        if now - self._warned_at > WARN_EVERY_S:
            self._warned_at = now
            log.warning("rate limiter unavailable (%s): not limiting", exc.__class__.__name__)
        return None


def make_limiter(settings: Settings, redis: Any | None) -> Limiter:
    return RedisLimiter(redis, prefix=settings.redis_prefix) if redis is not None else MemoryLimiter()


@dataclass(frozen=True, slots=True)
class Buckets:
    user: Bucket
    ip: Bucket
    login_ip: Bucket  # failed sign-ins from one client address, whatever the account
    login_account: Bucket  # failed sign-ins for one account from one client address
    webhook_ip: Bucket  # provider webhooks from one client address

    @classmethod
    def from_settings(cls, s: Settings) -> Buckets:
        return cls(
            user=Bucket("user", s.rate_limit_user_burst, s.rate_limit_user_per_s),
            ip=Bucket("ip", s.rate_limit_ip_burst, s.rate_limit_ip_per_s),
            login_ip=Bucket("login_ip", s.rate_limit_login_ip_burst, s.rate_limit_login_ip_per_s),
            login_account=Bucket("login_account", s.rate_limit_login_burst, s.rate_limit_login_per_s),
            webhook_ip=Bucket("webhook_ip", s.rate_limit_webhook_ip_burst, s.rate_limit_webhook_ip_per_s),
        )


@dataclass
class RateLimits:
    """The app's limiter and bucket sizes (`services.ratelimits`). `enabled` governs the API and
    sign-in limits; provider send rates always apply."""

    enabled: bool
    limiter: Limiter
    buckets: Buckets

    @classmethod
    def create(cls, settings: Settings, redis: Any | None) -> RateLimits:
        return cls(
            settings.rate_limit_enabled, make_limiter(settings, redis), Buckets.from_settings(settings)
        )


def make_rate_limits(settings: Settings, redis: Any | None) -> RateLimits:
    """Built once by the composition root (`server.services.build_services`)."""
    return RateLimits.create(settings, redis)

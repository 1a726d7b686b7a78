"""Retry policy, circuit breaker and token buckets, with a clock we move by hand."""

from __future__ import annotations

import random
import uuid

import pytest

from server.messages.circuit import CircuitBreaker, CircuitState
from server.messages.retry import RetryPolicy
from server.ratelimit import MemoryLimiter, RedisLimiter, send_rate_bucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_s=2.0, max_s=60.0, max_attempts=8, rng=random.Random(7))
    for attempts, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (12, 60.0)]:
        delays = [policy.delay(attempts, None) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not a constant
    assert policy.exhausted(8) and not policy.exhausted(7)


def test_retry_after_wins_over_backoff_but_not_over_the_cap() -> None:
    policy = RetryPolicy(base_s=2.0, max_s=60.0, max_attempts=8)
    assert policy.delay(5, 1.0) == 1.0
    assert policy.delay(1, 3600.0) == 60.0
    assert policy.delay(1, 0.0) == 0.05  # no hot loop on "Retry-After: 0"


def test_circuit_opens_after_consecutive_failures_then_half_opens_for_one_probe() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, reset_s=30.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    b.success()  # a success resets the count
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.state is CircuitState.open and not b.allow()
    assert b.retry_in() == 30.0

    clock.now += 30.0
    assert b.allow()  # the probe
    assert b.state is CircuitState.half_open
    assert not b.allow()  # only one at a time
    b.failure()
    assert b.state is CircuitState.open and not b.allow()

    clock.now += 30.0
    assert b.allow()
    b.success()
    assert b.state is CircuitState.closed and b.allow() and b.allow()


def test_an_abandoned_probe_frees_the_half_open_slot() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_s=5.0, clock=clock)
    b.failure()
    clock.now += 5.0
    assert b.allow()
    b.abandon()
    assert b.allow()


def test_pause_skips_the_provider_without_counting_a_failure() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_s=5.0, clock=clock)
    b.pause(2.0)
    assert not b.allow() and b.state is CircuitState.closed and b.retry_in() == 2.0
    clock.now += 2.0
    assert b.allow()


async def test_local_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    ten, one = send_rate_bucket(10.0), send_rate_bucket(1.0)
    waits = [await limiter.reserve("p", ten) for _ in range(13)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3])
    await limiter.cancel("p", ten)  # the last one was not used
    clock.now += 0.3
    assert await limiter.reserve("p", ten) == pytest.approx(0.0, abs=1e-9)
    assert await limiter.reserve("other", one) == 0.0  # buckets are per key


async def test_redis_bucket_is_shared_between_limiters(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        key = f"test-{uuid.uuid4().hex}"
        a = RedisLimiter(client, prefix="switchboard-test:")
        b = RedisLimiter(client, prefix="switchboard-test:")
        five = send_rate_bucket(5.0)
        waits = [await (a if i % 2 else b).reserve(key, five) for i in range(8)]
        assert waits[:5] == [0.0] * 5
        assert waits[5:] == pytest.approx([0.2, 0.4, 0.6], abs=0.05)
        await a.cancel(key, five)
        assert await b.reserve(key, five) == pytest.approx(0.6, abs=0.05)
        assert await client.pttl(f"switchboard-test:rl:{key}") > 0  # idle buckets expire
    finally:
        await client.aclose()


async def test_redis_bucket_falls_back_to_a_local_one_while_redis_is_down() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # nothing listens there
    try:
        limiter = RedisLimiter(client)
        waits = [await limiter.reserve("p", send_rate_bucket(2.0)) for _ in range(3)]
    finally:
        await client.aclose()
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == pytest.approx(0.5, abs=0.05)

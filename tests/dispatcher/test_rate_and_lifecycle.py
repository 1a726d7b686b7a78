"""Provider send rates end to end, the monitor, the embedded dispatcher and `switchboard worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any, ClassVar

import pytest

from server.app import create_app
from server.db import utcnow
from server.messages import claims
from server.providers.adapters import ADAPTERS, OutgoingMessage, SendResult
from server.providers.adapters.sandbox import SandboxAdapter
from tests.conftest import make_settings
from tests.dispatcher.conftest import DispatcherFactory, SinkFactory, World, wait_until


async def _all_sent(world: World, n: int) -> bool:
    return (await world.statuses()).get("sent", 0) == n


class Clocked(SandboxAdapter):
    """The sandbox adapter, noting when the dispatcher hands it each message.

    The rate is a promise about when we send. Arrival times at the sink would also count the test
    loop's own stalls: on a loaded machine a burst written just before a stall is read after it,
    next to the send that waited its turn, and looks like one burst."""

    calls: ClassVar[list[float]] = []

    async def send(self, msg: OutgoingMessage) -> SendResult:
        type(self).calls.append(time.monotonic())
        return await super().send(msg)


@pytest.fixture
def clocked() -> list[float]:
    Clocked.calls = []
    return Clocked.calls


async def test_a_provider_is_kept_under_its_send_rate(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory, clocked: list[float]
) -> None:
    sink = await make_sink()
    await world.provider(sink.url, send_rate=10.0)
    await make_dispatcher(world, adapters={**ADAPTERS, "sandbox": Clocked})
    await world.messages(25)

    await wait_until(lambda: _all_sent(world, 25))

    assert len(sink.delivered) == 25
    assert_rate(sorted(clocked), rate=10.0, burst=10)


def assert_rate(times: list[float], *, rate: float, burst: int, slack_s: float = 0.05) -> None:
    """A token bucket's promise: any n sends in a row span at least (n - burst) / rate seconds."""
    assert len(times) > burst
    for i in range(len(times)):
        for j in range(i + burst, len(times)):
            assert times[j] - times[i] >= (j - i + 1 - burst) / rate - slack_s, (i, j)


async def test_the_send_rate_is_shared_by_workers_through_redis(
    pg_world: World,
    make_sink: SinkFactory,
    make_dispatcher: DispatcherFactory,
    redis_url: str,
    clocked: list[float],
) -> None:
    import redis.asyncio as aioredis

    sink = await make_sink()
    provider_id = await pg_world.provider(sink.url, send_rate=10.0)
    client = aioredis.from_url(redis_url)
    await client.delete(f"sb:rl:provider:{provider_id}")  # ids restart in every test database
    await client.aclose()
    adapters = {**ADAPTERS, "sandbox": Clocked}
    one = await make_dispatcher(pg_world, redis_url=redis_url, dispatcher_batch=5, adapters=adapters)
    two = await make_dispatcher(pg_world, redis_url=redis_url, dispatcher_batch=5, adapters=adapters)
    await pg_world.messages(25)

    await wait_until(lambda: _all_sent(pg_world, 25))

    assert len(sink.delivered) == 25
    assert_rate(sorted(clocked), rate=10.0, burst=10)  # two workers, 10/s between them
    assert one.stats.sent > 0 and two.stats.sent > 0


async def test_a_failing_side_task_stops_the_dispatcher_with_its_error(
    world: World, make_dispatcher: DispatcherFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_session: Any) -> Any:
        raise ValueError("gauge bug")

    monkeypatch.setattr(claims, "backlog", broken)
    dispatcher = await make_dispatcher(world)
    await asyncio.wait_for(dispatcher.stopped.wait(), 5)
    assert isinstance(dispatcher.error, ValueError)
    dispatcher.error = None  # seen: let the fixture stop it cleanly


async def test_the_web_app_runs_the_dispatcher_when_embedded(world: World, make_sink: SinkFactory) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    app = create_app(make_settings(world.url, embedded_worker=True, dispatcher_poll_s=0.1))
    async with app.router.lifespan_context(app):
        [mid] = await world.messages(1)
        await wait_until(lambda: _all_sent(world, 1))
    assert len(sink.requests) == 1 and mid


async def test_worker_command_stops_gracefully_on_sigterm(world: World, make_sink: SinkFactory) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    env = {
        **os.environ,
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_DATABASE_URL": world.url,
        "SWITCHBOARD_DISPATCHER_POLL_S": "0.1",
        "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS": "true",  # the sink listens on 127.0.0.1
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "worker", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await world.messages(5)
        await wait_until(lambda: _all_sent(world, 5), within=20)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert code == 0, stderr
    assert len(sink.delivered) == 5


async def test_a_send_that_would_wait_long_for_its_rate_is_deferred_without_an_attempt(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url, send_rate=0.1)  # one message per 10 s: far past the lease's patience
    await make_dispatcher(world)
    first, *rest = await world.messages(3)

    async def deferred() -> bool:
        reasons = [(await world.get(i)).reason for i in rest]
        return reasons == ["waiting for a provider"] * len(rest)

    await wait_until(deferred)

    assert (await world.get(first)).status == "sent"
    for i in rest:
        m = await world.get(i)
        assert (m.status, m.attempts) == ("queued", 0)  # not sitting in `sending`, no attempt spent
        assert 5 < (m.next_attempt_at - utcnow()).total_seconds() <= 10.5
    assert len(sink.requests) == 1

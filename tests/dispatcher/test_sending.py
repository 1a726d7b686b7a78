"""Messages go out through their providers: sent, retried, failed, fallen back, circuit-broken."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from bench.dispatch.sink import Answer, Received
from server.db import utcnow
from server.messages.circuit import CircuitState
from server.providers.adapters import ADAPTERS, OutgoingMessage, SendResult
from server.providers.adapters.sandbox import SandboxAdapter
from server.providers.models import Provider
from tests.dispatcher.conftest import DispatcherFactory, SinkFactory, World, wait_until


async def sent(world: World, ids: list[int]) -> bool:
    return (await world.statuses()).get("sent", 0) == len(ids)


async def settled(world: World, message_id: int) -> bool:
    return (await world.get(message_id)).status not in ("queued", "scheduled", "sending")


async def test_send_now_goes_out_with_a_stable_idempotency_key(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    provider_id = await world.provider(sink.url)
    dispatcher = await make_dispatcher(world)
    [mid] = await world.messages(1, to="ada@example.test")
    dispatcher.services.dispatch_wakeup.set()

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert m.status == "sent"
    assert (m.provider_id, m.provider_kind) == (provider_id, "sandbox")
    assert m.provider_message_id and m.provider_message_id.startswith("sbx-")
    assert m.attempts == 1 and m.sent_at is not None and m.lease_until is None
    assert await world.history(mid) == ["sending", "sent"]
    [request] = sink.requests
    assert request.key == f"sb-{world.workspace_id}-{mid}"
    assert b"ada@example.test" in request.body


def failing(times: int, answer: Answer) -> object:
    """A responder that gives `answer` to the first `times` requests, then accepts."""
    seen = {"n": 0}

    def respond(_r: Received) -> Answer | None:
        seen["n"] += 1
        return answer if seen["n"] <= times else None

    return respond


async def test_5xx_is_retried_with_exponential_backoff(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink(failing(2, Answer(503, b'{"error": "upstream overloaded"}')))
    await world.provider(sink.url)
    await make_dispatcher(world, retry_base_s=0.4)
    [mid] = await world.messages(1)

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.attempts, m.reason) == ("sent", 3, None)
    assert await world.history(mid) == ["sending", "queued", "sending", "queued", "sending", "sent"]
    first, second, third = (r.at for r in sink.requests)
    # "equal jitter": attempt n waits between d/2 and d, with d = 0.4 s · 2^(n-1)
    assert 0.2 <= second - first <= 0.4 + 0.25
    assert 0.4 <= third - second <= 0.8 + 0.25


async def test_429_is_retried_after_its_retry_after(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink(failing(1, Answer(429, b'{"error": "slow down"}', {"Retry-After": "1"})))
    await world.provider(sink.url)
    await make_dispatcher(world)
    [mid] = await world.messages(1)

    await wait_until(lambda: settled(world, mid))

    assert (await world.get(mid)).status == "sent"
    first, second = (r.at for r in sink.requests)
    assert 1.0 <= second - first < 1.6  # not the 0.05 s backoff: the provider's own Retry-After


async def test_permanent_error_fails_at_once_with_the_providers_reason(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink(failing(99, Answer(400, b'{"detail": "invalid recipient ada@"}')))
    provider_id = await world.provider(sink.url)
    await make_dispatcher(world)
    [mid] = await world.messages(1)

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.attempts, m.reason) == ("failed", 1, "invalid recipient ada@")
    assert m.provider_id == provider_id
    assert len(sink.requests) == 1
    assert await world.history(mid) == ["sending", "failed"]


async def test_transient_failures_give_up_after_max_attempts(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink(failing(99, Answer(500, b'{"error": "boom"}')))
    await world.provider(sink.url)
    await make_dispatcher(world, max_attempts=3, circuit_failures=10)
    [mid] = await world.messages(1)

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.attempts) == ("failed", 3)
    assert m.reason == "gave up after 3 attempts: boom"
    assert len(sink.requests) == 3


async def test_next_provider_takes_over_when_one_answers_500(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    down = await make_sink(lambda _r: Answer(500, b'{"error": "internal"}'))
    up = await make_sink()
    await world.provider(down.url, priority=1, name="primary")
    backup = await world.provider(up.url, priority=2, name="backup")
    await world.provider(up.url, priority=0, channel="sms", name="other channel")
    await make_dispatcher(world)
    [mid] = await world.messages(1)

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.provider_id, m.attempts) == ("sent", backup, 1)
    assert len(down.requests) == 1 and len(up.requests) == 1


async def test_circuit_opens_so_a_dead_provider_is_not_hammered(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    down = await make_sink(lambda _r: Answer(502, b'{"error": "bad gateway"}'))
    up = await make_sink()
    primary = await world.provider(down.url, priority=1)
    await world.provider(up.url, priority=2)
    dispatcher = await make_dispatcher(world, dispatcher_concurrency=1, circuit_failures=3)
    ids = await world.messages(10)

    await wait_until(lambda: sent(world, ids))

    assert len(down.requests) == 3  # then the circuit is open: the other 7 go straight to the backup
    assert len(up.delivered) == 10
    assert dispatcher.circuits[primary].state is CircuitState.open


async def test_no_provider_for_the_channel_fails_the_message(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url, channel="email")
    await make_dispatcher(world)
    [mid] = await world.messages(1, channel="sms", to="+14155550100")

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.reason) == ("failed", "no enabled provider for the sms channel")
    assert sink.requests == []


async def test_scheduled_message_goes_out_within_a_second_of_send_at(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    await make_dispatcher(world, dispatcher_poll_s=30.0)  # the timer, not the poll, must fire
    send_at = utcnow() + dt.timedelta(seconds=1.5)
    [mid] = await world.messages(1, send_at=send_at)
    assert (await world.get(mid)).status == "scheduled"

    await wait_until(lambda: settled(world, mid), within=5)

    [request] = sink.requests
    lag = request.at - send_at.timestamp()
    m = await world.get(mid)
    assert 0 <= lag < 1.0, f"lag {lag:.3f}s; sent_at - send_at = {(m.sent_at - send_at).total_seconds():.3f}s"
    assert await world.history(mid) == ["sending", "sent"]


async def test_an_adapter_bug_is_logged_and_retried_not_lost(
    world: World,
    make_sink: SinkFactory,
    make_dispatcher: DispatcherFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Buggy(SandboxAdapter):
        calls = 0

        async def send(self, msg: OutgoingMessage) -> SendResult:
            type(self).calls += 1
            if type(self).calls == 1:
                raise KeyError("oops")
            return await super().send(msg)

    sink = await make_sink()
    await world.provider(sink.url)
    await make_dispatcher(world, adapters={**ADAPTERS, "sandbox": Buggy})
    [mid] = await world.messages(1)

    await wait_until(lambda: settled(world, mid))

    m = await world.get(mid)
    assert (m.status, m.attempts) == ("sent", 2)
    assert "raised while sending message" in caplog.text and "KeyError" in caplog.text


async def test_a_changed_provider_row_gets_a_new_adapter(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    old, new = await make_sink(), await make_sink()
    provider_id = await world.provider(old.url)
    await make_dispatcher(world)
    [first] = await world.messages(1)
    await wait_until(lambda: settled(world, first))

    async with world.db.transaction() as s:  # as PATCH /api/v1/providers/{id} does
        await s.execute(
            update(Provider)
            .where(Provider.id == provider_id)
            .values(config={"delivery_delay_ms": -1, "sink_url": new.url}, updated_at=utcnow())
        )
    [second] = await world.messages(1)
    await wait_until(lambda: settled(world, second))

    assert [r.key.rsplit("-", 1)[1] for r in old.requests] == [str(first)]
    assert [r.key.rsplit("-", 1)[1] for r in new.requests] == [str(second)]

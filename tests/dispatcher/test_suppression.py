"""Suppressed addresses end `suppressed` and never reach a provider."""

from __future__ import annotations

from server.messages.suppression import SuppressionFilter
from tests.dispatcher.conftest import DispatcherFactory, SinkFactory, World, new_workspace, wait_until


async def _settled(world: World, n: int) -> bool:
    s = await world.statuses()
    return sum(v for k, v in s.items() if k in ("sent", "suppressed", "failed")) == n


async def test_suppressed_address_is_never_sent(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    await world.suppress("bounced@example.test")
    blocked = await world.messages(1, to="Bounced@Example.test")
    ok = await world.messages(1, to="fine@example.test")
    dispatcher = await make_dispatcher(world)

    await wait_until(lambda: _settled(world, 2))

    m = await world.get(blocked[0])
    assert (m.status, m.reason, m.attempts) == ("suppressed", "address is on the suppression list", 1)
    assert await world.history(blocked[0]) == ["suppressed"]  # never shown as sending
    assert (await world.get(ok[0])).status == "sent"
    assert [r.key for r in sink.requests] == [f"sb-{world.workspace_id}-{ok[0]}"]
    assert dispatcher.stats.suppressed == 1


async def test_a_suppression_added_while_running_applies_to_the_next_send(
    world: World, make_sink: SinkFactory, make_dispatcher: DispatcherFactory
) -> None:
    sink = await make_sink()
    await world.provider(sink.url)
    await make_dispatcher(world)
    await world.messages(1, to="later@example.test")
    await wait_until(lambda: _settled(world, 1))

    await world.suppress("later@example.test", reason="unsubscribe")
    [mid] = await world.messages(1, to="later@example.test")
    await wait_until(lambda: _settled(world, 2))

    assert (await world.get(mid)).status == "suppressed"
    assert len(sink.requests) == 1


async def test_suppression_belongs_to_one_workspace(world: World) -> None:
    other = await new_workspace(world.db, "Other")
    await world.suppress("shared@example.test")
    f = SuppressionFilter()
    async with world.db.sessions() as s:
        found = await f.suppressed(
            s, [(world.workspace_id, "shared@example.test"), (other, "shared@example.test")]
        )
    assert found == {(world.workspace_id, "shared@example.test")}


async def test_bloom_hits_are_checked_against_the_table(world: World) -> None:
    for i in range(200):
        await world.suppress(f"s{i}@example.test")
    f = SuppressionFilter()
    candidates = [(world.workspace_id, f"n{i}@example.test") for i in range(5000)]
    async with world.db.sessions() as s:
        assert await f.suppressed(s, candidates) == set()
        assert await f.suppressed(s, [(world.workspace_id, "s7@example.test")]) == {
            (world.workspace_id, "s7@example.test")
        }
    # 5,000 misses cost (about) no database lookups: the filter answered them
    assert f.db_checks <= 1 + 10

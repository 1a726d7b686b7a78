from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from server.cache import EntityCache
from server.metrics import Metrics
from tests.ops.conftest import AppFactory


@dataclass
class Row:
    id: int
    version: int
    name: str


def cache() -> EntityCache:
    return EntityCache("contact", size=100, ttl_s=30, metrics=Metrics())


async def _eventually(check: Any, timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_loads_once_then_hits_and_counts() -> None:
    c = cache()
    loads = 0

    async def load() -> Row:
        nonlocal loads
        loads += 1
        return Row(1, 1, "Ada")

    for _ in range(3):
        assert (await c.get_or_load(1, 1, load)).name == "Ada"
    assert loads == 1
    assert c._hits._value.get() == 2 and c._misses._value.get() == 1


async def test_a_load_racing_an_invalidation_is_not_stored() -> None:
    c = cache()
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_old_read() -> Row:
        started.set()
        await release.wait()
        return Row(1, 1, "old")  # read before the writer committed version 2

    reader = asyncio.create_task(c.get_or_load(1, 1, slow_old_read))
    await started.wait()
    c.drop(1, 1, version=2)  # the writer commits and invalidates
    release.set()
    assert (await reader).name == "old"  # this caller gets what it read...
    assert c.get(1, 1) is None  # ...but nobody else will
    c.put(1, 1, Row(1, 1, "old"), version=1)  # nor can it be put back later
    assert c.get(1, 1) is None
    c.put(1, 1, Row(1, 2, "new"), version=2)
    assert c.get(1, 1).name == "new"


async def test_min_version_refuses_anything_older() -> None:
    c = cache()
    c.put(1, 7, Row(7, 3, "v3"), version=3)
    assert c.get(1, 7, min_version=3).name == "v3"
    assert c.get(1, 7, min_version=4) is None  # the client just wrote version 4
    # Keys are per workspace.
    assert c.get(2, 7) is None


async def test_invalidate_reaches_every_instance_through_redis(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    settings = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    a = await make_app(**settings)
    b = await make_app(a.state.services.settings.database_url, **settings)
    ca, cb = a.state.services.caches, b.state.services.caches
    await asyncio.wait_for(asyncio.gather(ca.listening.wait(), cb.listening.wait()), 5)

    for c in (ca, cb):
        c.contacts.put(1, 5, Row(5, 1, "Ada"), version=1)
        c.templates.put(1, 9, {"body": "Hi"})
    await ca.invalidate("contact", 1, 5, version=2)
    assert ca.contacts.get(1, 5) is None  # at once on the writer's instance
    await _eventually(lambda: cb.contacts.get(1, 5) is None)
    cb.contacts.put(1, 5, Row(5, 1, "Ada"), version=1)  # a late stale read is refused there too
    assert cb.contacts.get(1, 5) is None
    assert cb.templates.get(1, 9) == {"body": "Hi"}  # untouched keys stay

    await cb.invalidate("template", 1, 9)
    await _eventually(lambda: ca.templates.get(1, 9) is None)


async def test_committed_change_events_invalidate_other_instances(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    """The realtime relay's batches on `{prefix}ws:{id}` drop changed contacts everywhere."""
    import orjson
    import redis.asyncio as aioredis

    from realtime.types import Event, encode_batch

    app = await make_app(redis_url=redis_url, redis_prefix=redis_prefix)
    caches = app.state.services.caches
    await asyncio.wait_for(caches.listening.wait(), 5)
    caches.contacts.put(3, 11, Row(11, 4, "Grace"), version=4)
    caches.contacts.put(3, 12, Row(12, 1, "Other"), version=1)
    envelope = {
        "id": 99,
        "type": "contact.updated",
        "ts": "2026-11-24T00:00:00Z",
        "data": {"contact_id": 11, "version": 5, "changed": {"name": "G"}, "by": 1},
    }
    batch = encode_batch([Event(3, 99, "contact.updated", 11, orjson.dumps(envelope))])
    client = aioredis.from_url(redis_url)
    try:
        await client.publish(f"{redis_prefix}ws:3", batch)
    finally:
        await client.aclose()
    await _eventually(lambda: caches.contacts.get(3, 11) is None)
    assert caches.contacts.get(3, 12).name == "Other"
    caches.contacts.put(3, 11, Row(11, 4, "Grace"), version=4)
    assert caches.contacts.get(3, 11) is None  # version 5 exists: 4 is never served again


async def test_without_redis_invalidate_is_local(make_app: AppFactory) -> None:
    app = await make_app()
    caches = app.state.services.caches
    caches.contacts.put(1, 1, Row(1, 1, "Ada"), version=1)
    await caches.invalidate("contact", 1, 1, version=2)
    assert caches.contacts.get(1, 1) is None
    with pytest.raises(ValueError):
        caches.of("unicorn")


async def _cached_contact(app: Any, client: Any) -> tuple[int, int]:
    r = await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})
    assert r.status_code == 201, r.text
    ws = (await client.get("/api/v1/me")).json()["workspace_id"]
    return ws, r.json()["id"]


async def test_a_contact_edit_on_one_instance_drops_it_on_the_other(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    """End to end: PATCH on A → outbox → relay → Redis → B's cache, with no explicit invalidate."""
    from tests.ops.conftest import sign_in

    settings = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    a = await make_app(**settings)
    b = await make_app(a.state.services.settings.database_url, **settings)
    cb = b.state.services.caches
    await asyncio.wait_for(cb.listening.wait(), 5)
    client = await sign_in(a)
    ws, cid = await _cached_contact(a, client)
    cb.contacts.put(ws, cid, Row(cid, 1, "Ada"), version=1)
    assert cb.contacts.get(ws, cid) is not None

    r = await client.patch(f"/api/v1/contacts/{cid}", json={"name": "Ada K."})
    assert r.status_code == 200 and r.json()["version"] == 2

    def v2_reached_b() -> bool:
        # The late `contact.created` (v1) event also drops the entry, so "dropped" alone could be
        # the v1 event: wait until B refuses a stale v1 read, which only v2's event makes it do.
        cb.contacts.put(ws, cid, Row(cid, 1, "Ada"), version=1)
        return cb.contacts.get(ws, cid) is None

    await _eventually(v2_reached_b, timeout_s=5)
    cb.contacts.put(ws, cid, Row(cid, 2, "Ada K."), version=2)
    assert cb.contacts.get(ws, cid).name == "Ada K."


async def test_without_redis_committed_edits_drop_the_local_entry(make_app: AppFactory) -> None:
    from tests.ops.conftest import sign_in

    app = await make_app()
    caches = app.state.services.caches
    client = await sign_in(app)
    ws, cid = await _cached_contact(app, client)
    caches.contacts.put(ws, cid, Row(cid, 1, "Ada"), version=1)
    r = await client.patch(f"/api/v1/contacts/{cid}", json={"tags": ["vip"]})
    assert r.status_code == 200
    await _eventually(lambda: caches.contacts.get(ws, cid) is None, timeout_s=5)


async def test_messages_reuse_the_compiled_template_until_it_changes(make_app: AppFactory) -> None:
    from tests.ops.conftest import sign_in

    app = await make_app()
    client = await sign_in(app)
    caches = app.state.services.caches
    cid = (await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})).json()[
        "id"
    ]
    r = await client.post(
        "/api/v1/templates", json={"name": "Hi", "channel": "email", "subject": "Hi {{ name }}", "body": "v1"}
    )
    tid = r.json()["id"]

    async def send() -> dict[str, Any]:
        r = await client.post(
            "/api/v1/messages", json={"contact_id": cid, "channel": "email", "template_id": tid}
        )
        assert r.status_code == 202, r.text
        return (await client.get(f"/api/v1/messages/{r.json()['id']}")).json()

    first, second = await send(), await send()
    assert first["subject"] == second["subject"] == "Hi Ada" and second["body"] == "v1"
    assert caches.templates._misses._value.get() == 1 and caches.templates._hits._value.get() == 1

    assert (await client.patch(f"/api/v1/templates/{tid}", json={"body": "v2"})).status_code == 200
    assert (await send())["body"] == "v2"
    assert caches.templates._misses._value.get() == 2

    # An email template never serves an SMS, cached or not.
    r = await client.post("/api/v1/messages", json={"contact_id": cid, "channel": "sms", "template_id": tid})
    assert r.status_code == 422
    assert (await client.delete(f"/api/v1/templates/{tid}")).status_code == 204
    r = await client.post(
        "/api/v1/messages", json={"contact_id": cid, "channel": "email", "template_id": tid}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "template_id"


async def _subscriptions(redis_url: str, name: str) -> int:
    """Connections named `name` holding a (pattern) subscription, from Redis itself."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return sum(
        1 for c in clients if c.get("name") == name and (int(c.get("sub", 0)) or int(c.get("psub", 0)))
    )


async def test_invalidations_arrive_on_the_one_subscription_of_the_process(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    settings = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    a = await make_app(**settings)
    ca = a.state.services.caches
    await asyncio.wait_for(ca.listening.wait(), 5)
    name = f"switchboard:{redis_prefix}"
    # The realtime hub's subscription is the only one: the cache follows it, opening none.
    assert await _subscriptions(redis_url, name) == 1
    rt = a.state.services.realtime
    assert rt.backend.client is a.state.services.redis  # one Redis client (one pool) in the process

    b = await make_app(a.state.services.settings.database_url, **settings)
    cb = b.state.services.caches
    await asyncio.wait_for(cb.listening.wait(), 5)
    assert await _subscriptions(redis_url, name) == 2  # one per app (two apps in this test process)
    ca.contacts.put(1, 5, Row(5, 1, "Ada"), version=1)
    await cb.invalidate("contact", 1, 5, version=2)
    await _eventually(lambda: ca.contacts.get(1, 5) is None)

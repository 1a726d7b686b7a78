from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from server.auth import service as auth_service
from server.db import utcnow
from tests.ops.conftest import AppFactory, http_client, sign_in
from tests.ops.history import add_message


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(app: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await http_client(app).get("/metrics")  # type: ignore[arg-type]
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_latency_is_labelled_by_route_template(make_app: AppFactory) -> None:
    app = await make_app()
    client = await sign_in(app)
    for i in range(3):
        r = await client.post("/api/v1/contacts", json={"name": f"C{i}", "email": f"c{i}@example.test"})
        await client.get(f"/api/v1/contacts/{r.json()['id']}")
    await client.get("/api/v1/contacts/999999")
    await client.get("/no/such/page")

    got = await scrape(app)
    count = "switchboard_http_request_duration_seconds_count"
    route = "/api/v1/contacts/{contact_id}"
    assert got[(count, (("method", "GET"), ("route", route), ("status", "200")))] == 3
    assert got[(count, (("method", "GET"), ("route", route), ("status", "404")))] == 1
    assert got[(count, (("method", "POST"), ("route", "/api/v1/contacts"), ("status", "201")))] == 3
    assert got[(count, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    # No raw path ever becomes a label.
    assert not any("/api/v1/contacts/1" == dict(labels).get("route") for _, labels in got)


async def test_database_figures_move_with_messages(make_app: AppFactory, db_url: str) -> None:
    app = await make_app(db_url)
    db = app.state.services.db
    async with db.transaction() as s:
        ws = (await auth_service.get_or_create_workspace(s, name="Acme")).id
    got = await scrape(app)
    assert got[("switchboard_dispatch_queue_depth", ())] == 0
    assert got[("switchboard_dispatch_queue_lag_seconds", ())] == 0

    now = utcnow()
    await add_message(db, ws, status="queued", next_attempt_at=now - dt.timedelta(seconds=90))
    await add_message(db, ws, status="queued", next_attempt_at=now - dt.timedelta(seconds=5))
    await add_message(db, ws, status="queued", next_attempt_at=now + dt.timedelta(hours=1))  # not due
    await add_message(db, ws, status="delivered", provider="sendgrid")
    await add_message(db, ws, status="delivered", provider="sendgrid")
    await add_message(db, ws, status="bounced", provider="mailgun")

    got = await scrape(app)
    assert got[("switchboard_dispatch_queue_depth", ())] == 2
    assert 90 <= got[("switchboard_dispatch_queue_lag_seconds", ())] < 120
    msgs = "switchboard_messages"
    assert got[(msgs, (("provider", "sendgrid"), ("status", "delivered")))] == 2
    assert got[(msgs, (("provider", "mailgun"), ("status", "bounced")))] == 1
    assert got[(msgs, (("provider", "none"), ("status", "queued")))] == 3


async def test_each_app_has_its_own_registry(make_app: AppFactory) -> None:
    one = await make_app(rate_limit_enabled=True, rate_limit_ip_burst=1, rate_limit_ip_per_s=0.01)
    two = await make_app()
    c = http_client(one)
    assert (await c.get("/api/v1/openapi.json")).status_code == 200
    assert (await c.get("/api/v1/openapi.json")).status_code == 429
    assert (await scrape(one))[("switchboard_rate_limit_rejections_total", (("bucket", "ip"),))] == 1
    assert ("switchboard_rate_limit_rejections_total", (("bucket", "ip"),)) not in await scrape(two)


async def test_an_embedded_dispatcher_reports_its_outcomes(make_app: AppFactory) -> None:
    import asyncio

    from tests.ops.conftest import sign_in

    app = await make_app(embedded_worker=True)
    client = await sign_in(app)
    r = await client.post(
        "/api/v1/providers",
        json={"name": "Sandbox", "kind": "sandbox", "channel": "email", "priority": 1, "config": {}},
    )
    assert r.status_code == 201, r.text
    cid = (await client.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test"})).json()[
        "id"
    ]
    r = await client.post(
        "/api/v1/messages", json={"contact_id": cid, "channel": "email", "subject": "Hi", "body": "Hello"}
    )
    assert r.status_code == 202, r.text
    for _ in range(100):
        if (await client.get(f"/api/v1/messages/{r.json()['id']}")).json()["status"] in ("sent", "delivered"):
            break
        await asyncio.sleep(0.05)
    got = await scrape(app)
    assert got[("switchboard_dispatcher_outcomes_total", (("outcome", "sent"),))] == 1
    assert got[("switchboard_dispatcher_outcomes_total", (("outcome", "failed"),))] == 0
    assert got[("switchboard_dispatcher_in_flight", ())] == 0


def test_component_collector_reads_deliverer_outcomes() -> None:
    import collections
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from server.metrics import ComponentCollector

    deliverer = SimpleNamespace(outcomes=collections.Counter(success=3, gave_up=1))
    registry = CollectorRegistry()
    registry.register(ComponentCollector(SimpleNamespace(components=[deliverer]), queue=True))
    got = samples(generate_latest(registry).decode())
    family = "switchboard_endpoint_deliveries_total"
    assert got[(family, (("outcome", "success"),))] == 3
    assert got[(family, (("outcome", "failure"),))] == 0
    assert got[(family, (("outcome", "gave_up"),))] == 1
    # No dispatcher in that process: no dispatcher figures at all (not zeros).
    assert not any(name.startswith("switchboard_dispatch") for name, _ in got)


async def test_waiting_long_polls_are_counted(make_app: AppFactory) -> None:
    import asyncio

    from tests.ops.conftest import sign_in

    app = await make_app()
    client = await sign_in(app)
    poll = asyncio.create_task(client.get("/api/v1/events", params={"topics": "board", "timeout": "1"}))
    gauge = ("switchboard_longpolls_open", (("route", "/api/v1/events"),))
    for _ in range(50):
        await asyncio.sleep(0.02)
        if (await scrape(app)).get(gauge) == 1:
            break
    assert (await scrape(app))[gauge] == 1
    r = await poll
    assert r.status_code == 200 and r.json()["events"] == []
    got = await scrape(app)
    assert got[gauge] == 0
    count = "switchboard_http_request_duration_seconds_count"
    assert got[(count, (("method", "GET"), ("route", "/api/v1/events"), ("status", "200")))] == 1

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, update

from server.app import create_app
from server.auth import service as auth_service
from server.db import Database
from server.endpoints import service
from server.endpoints.deliverer import Deliverer
from server.endpoints.models import Delivery, Endpoint
from server.events.models import Event
from server.events.service import emit, envelope
from tests.conftest import make_settings, until
from tests.endpoints.conftest import DelivererFactory
from tests.endpoints.receiver import Receiver, verify_signature


async def _endpoint(client: httpx.AsyncClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    r = await client.post("/api/v1/endpoints", json={"url": url, "events": events or ["*"]})
    assert r.status_code == 201, r.text
    return r.json()


async def _contact(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await client.post("/api/v1/contacts", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


async def _deliveries(client: httpx.AsyncClient, endpoint_id: int) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/endpoints/{endpoint_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_delivery_is_the_envelope_signed_with_the_endpoint_secret(
    client: httpx.AsyncClient, db: Database, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    await _contact(client, "Before the endpoint existed")  # not delivered: no backlog for new endpoints
    ep = await _endpoint(client, receiver.url("hook"), ["contact.created"])
    contact = await _contact(client, "Ada")
    await client.patch(
        f"/api/v1/contacts/{contact['id']}", json={"name": "Ada L."}
    )  # contact.updated: filtered out
    await start_deliverer()

    [got] = await until(lambda: receiver.at("hook"), what="a delivery")
    async with db.transaction() as s:
        event = (
            (await s.execute(select(Event).where(Event.type == "contact.created").order_by(Event.id.desc())))
            .scalars()
            .first()
        )
    assert event is not None
    assert orjson.loads(got.body) == envelope(event.id, event.type, event.ts, event.data)
    assert json.loads(got.body)["data"]["contact_id"] == contact["id"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["switchboard-event-type"] == "contact.created"
    assert verify_signature(got.headers["switchboard-signature"], got.body, ep["secret"])
    assert not verify_signature(got.headers["switchboard-signature"], got.body, "whsec_wrong")
    assert not verify_signature(got.headers["switchboard-signature"], got.body + b" ", ep["secret"])

    [d] = await until(lambda: _succeeded(client, ep["id"]), what="the log to show success")
    assert d["event_id"] == event.id and d["event_type"] == "contact.created"
    assert d["status_code"] == 200 and d["attempts"] == 1 and d["latency_ms"] > 0
    assert d["next_attempt_at"] is None
    # Only the one wanted event was ever sent.
    await _contact(client, "Grace")
    await until(lambda: len(receiver.at("hook")) == 2, what="the second contact")
    assert [json.loads(r.body)["type"] for r in receiver.at("hook")] == ["contact.created"] * 2


async def _succeeded(client: httpx.AsyncClient, endpoint_id: int) -> list[dict[str, Any]]:
    items = await _deliveries(client, endpoint_id)
    return items if items and all(d["status"] == "succeeded" for d in items) else []


async def test_retries_after_500_and_timeout_with_backoff(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.scripts["flaky"] = [500, "hang", 200]
    ep = await _endpoint(client, receiver.url("flaky"))
    await _contact(client, "Ada")
    await start_deliverer(timeout_s=1.0)

    [d] = await until(lambda: _succeeded(client, ep["id"]), what="success after retries")
    assert d["attempts"] == 3 and d["status_code"] == 200
    tries = receiver.at("flaky")
    assert len(tries) == 3
    assert len({t.body for t in tries}) == 1  # the same event each time
    # Backoff: base 0.05 s then 0.1 s (plus the 1 s timeout before the third try).
    assert tries[1].at - tries[0].at >= 0.04
    assert tries[2].at - tries[1].at >= 1.0 + 0.09


async def test_failures_are_logged_with_code_and_error(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.defaults["down"] = 503
    ep = await _endpoint(client, receiver.url("down"))
    await _contact(client, "Ada")
    await start_deliverer(backoff_base_s=30)  # one attempt, then a long wait

    [d] = await until(lambda: _with_attempts(client, ep["id"], 1), what="the first failure")
    assert d["status"] == "pending" and d["status_code"] == 503
    assert d["last_error"] == "HTTP 503: nope"
    assert d["next_attempt_at"] is not None


async def test_a_reply_with_nul_characters_is_logged_without_them(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.defaults["nul"] = 500
    receiver.bodies["nul"] = "bad\x00 request\x00"
    ep = await _endpoint(client, receiver.url("nul"))
    await _contact(client, "Ada")
    await start_deliverer(backoff_base_s=30)

    [d] = await until(lambda: _with_attempts(client, ep["id"], 1), what="the first failure")
    assert d["status_code"] == 500 and d["last_error"] == "HTTP 500: bad request"


async def _with_attempts(client: httpx.AsyncClient, endpoint_id: int, n: int) -> list[dict[str, Any]]:
    items = await _deliveries(client, endpoint_id)
    return items if items and items[-1]["attempts"] >= n else []


async def test_order_is_kept_per_endpoint_while_the_head_fails(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.scripts["ordered"] = [500, 500]
    await _endpoint(client, receiver.url("ordered"), ["contact.created"])
    for i in range(6):
        await _contact(client, f"C{i}")
    await start_deliverer()

    await until(lambda: len(receiver.at("ordered")) == 8, what="all deliveries")
    ids = [json.loads(r.body)["id"] for r in receiver.at("ordered")]
    assert ids[0] == ids[1] == ids[2]  # the head was retried and nothing overtook it
    assert ids[2:] == sorted(set(ids))
    assert len(set(ids)) == 6


async def test_endpoint_is_disabled_after_repeated_failures_and_re_enabled_by_patch(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.defaults["dead"] = 500
    ep = await _endpoint(client, receiver.url("dead"))
    await _contact(client, "Ada")
    await start_deliverer(max_failures=3)

    async def disabled() -> dict[str, Any] | None:
        e = (await client.get(f"/api/v1/endpoints/{ep['id']}")).json()
        return e if not e["enabled"] else None

    e = await until(disabled, what="the endpoint to be disabled")
    assert e["consecutive_failures"] == 3
    assert e["disabled_reason"].startswith("disabled after 3 consecutive failed deliveries; last: HTTP 500")
    await _contact(client, "Grace")  # not taken while disabled...
    n = len(receiver.at("dead"))
    assert n == 3
    await asyncio.sleep(0.3)
    assert len(receiver.at("dead")) == 3  # ...and no more attempts

    receiver.defaults["dead"] = 200
    r = await client.patch(f"/api/v1/endpoints/{ep['id']}", json={"enabled": True})
    assert r.status_code == 200
    assert (r.json()["enabled"], r.json()["consecutive_failures"], r.json()["disabled_reason"]) == (
        True,
        0,
        None,
    )

    async def both() -> list[dict[str, Any]]:
        # the stuck head and the event raised while disabled (taken from the log on re-enabling)
        items = await _succeeded(client, ep["id"])
        return items if len(items) == 2 else []

    await until(both, what="the backlog after re-enabling")
    assert [json.loads(r.body)["data"]["changed"]["name"] for r in receiver.at("dead")[3:]] == [
        "Ada",
        "Grace",
    ]


async def test_a_delivery_is_given_up_after_its_retry_window(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.scripts["late"] = [500] * 100
    ep = await _endpoint(client, receiver.url("late"))
    await _contact(client, "Ada")
    await _contact(client, "Grace")
    await start_deliverer(max_age_s=0.6, backoff_base_s=0.1, backoff_max_s=0.1)

    async def first_failed() -> list[dict[str, Any]]:
        items = await _deliveries(client, ep["id"])
        return items if items and items[-1]["status"] == "failed" else []

    items = await until(first_failed, what="the first delivery to be given up")
    assert items[-1]["attempts"] >= 2  # retried within the window, then given up
    # The next one is tried once the head gave up.
    await until(lambda: len({json.loads(r.body)["id"] for r in receiver.at("late")}) == 2, what="the second")


async def test_resend_sends_the_same_event_again(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    ep = await _endpoint(client, receiver.url("again"))
    await _contact(client, "Ada")
    await start_deliverer()
    [d] = await until(lambda: _succeeded(client, ep["id"]), what="first delivery")

    r = await client.post(f"/api/v1/endpoints/{ep['id']}/deliveries/{d['id']}/resend")
    assert r.status_code == 202, r.text
    assert r.json()["event_id"] == d["event_id"] and r.json()["id"] != d["id"]
    await until(lambda: len(receiver.at("again")) == 2, what="the resend")
    first, second = receiver.at("again")
    assert first.body == second.body
    assert verify_signature(second.headers["switchboard-signature"], second.body, ep["secret"])
    items = await until(lambda: _succeeded(client, ep["id"]), what="both in the log")
    assert len(items) == 2
    assert (await client.post(f"/api/v1/endpoints/{ep['id']}/deliveries/999999/resend")).status_code == 404


async def test_rotation_signs_with_both_secrets_during_the_overlap(
    client: httpx.AsyncClient, db: Database, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    ep = await _endpoint(client, receiver.url("rot"))
    new_secret = (await client.post(f"/api/v1/endpoints/{ep['id']}/rotate-secret")).json()["secret"]
    await _contact(client, "Ada")
    await start_deliverer()
    [got] = await until(lambda: receiver.at("rot"), what="a delivery")
    header = got.headers["switchboard-signature"]
    assert header.count("v1=") == 2
    assert verify_signature(header, got.body, ep["secret"])
    assert verify_signature(header, got.body, new_secret)

    # Once the overlap is over only the new secret signs.
    async with db.transaction() as s:
        await s.execute(
            update(Endpoint)
            .where(Endpoint.id == ep["id"])
            .values(previous_secret_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    await _contact(client, "Grace")
    await until(lambda: len(receiver.at("rot")) == 2, what="the second delivery")
    later = receiver.at("rot")[1]
    assert later.headers["switchboard-signature"].count("v1=") == 1
    assert verify_signature(later.headers["switchboard-signature"], later.body, new_secret)
    assert not verify_signature(later.headers["switchboard-signature"], later.body, ep["secret"])


async def test_a_dead_endpoint_does_not_delay_a_healthy_one(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.defaults["hang"] = "hang"
    dead = await _endpoint(client, receiver.url("hang"))
    await _endpoint(client, receiver.url("healthy"))
    await start_deliverer(timeout_s=5.0)
    for i in range(5):
        await _contact(client, f"C{i}")

    await until(lambda: len(receiver.at("healthy")) == 5, within=3.0, what="the healthy endpoint")
    # The dead one is still stuck on its first request, which has not timed out yet.
    assert len(receiver.at("hang")) == 1
    assert receiver.at("healthy")[-1].at - receiver.at("hang")[0].at < 2.0
    items = await _deliveries(client, dead["id"])
    assert [d["attempts"] for d in items] == [0] * 5


async def test_deliveries_page_with_a_cursor(
    client: httpx.AsyncClient, db: Database, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    ep = await _endpoint(client, receiver.url("page"))
    for i in range(5):
        await _contact(client, f"C{i}")
    await start_deliverer()
    await until(lambda: len(receiver.at("page")) == 5, what="all deliveries")
    r = await client.get(f"/api/v1/endpoints/{ep['id']}/deliveries", params={"limit": 3})
    page1 = r.json()
    assert len(page1["items"]) == 3 and page1["next_cursor"]
    r = await client.get(
        f"/api/v1/endpoints/{ep['id']}/deliveries", params={"limit": 3, "cursor": page1["next_cursor"]}
    )
    page2 = r.json()
    ids = [d["id"] for d in page1["items"] + page2["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5 and page2["next_cursor"] is None
    detail = (await client.get(f"/api/v1/endpoints/{ep['id']}/deliveries/{ids[0]}")).json()
    async with db.transaction() as s:
        row = (await s.execute(select(Delivery).where(Delivery.id == ids[0]))).scalar_one()
    assert detail["payload"] == row.payload and detail["payload"]["id"] == detail["event_id"]


async def test_two_deliverers_send_each_event_once_and_in_order(
    client: httpx.AsyncClient, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    """As with a worker process and an embedded `serve` sharing one database."""
    await _endpoint(client, receiver.url("shared"))
    for i in range(10):
        await _contact(client, f"C{i}")
    await start_deliverer()
    await start_deliverer()
    await until(lambda: len(receiver.at("shared")) >= 10, what="all deliveries")
    await asyncio.sleep(0.3)
    ids = [json.loads(r.body)["id"] for r in receiver.at("shared")]
    assert ids == sorted(set(ids)) and len(ids) == 10


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # LISTEN/NOTIFY is PostgreSQL's
async def test_on_postgresql_a_commit_wakes_the_deliverer_without_waiting_for_the_poll(
    client: httpx.AsyncClient, db: Database, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    assert db.dialect == "postgresql"
    await _endpoint(client, receiver.url("listen"))
    await start_deliverer(poll_s=60.0)
    await asyncio.sleep(0.3)  # the listener is up and the first pass is done
    started = time.monotonic()
    await _contact(client, "Ada")
    await until(lambda: receiver.at("listen"), within=3.0, what="a delivery woken by NOTIFY")
    assert time.monotonic() - started < 3.0


async def test_finished_deliveries_leave_the_log_after_the_retention(
    client: httpx.AsyncClient, db: Database, receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    receiver.scripts["prune"] = [200, 200, 500]
    ep = await _endpoint(client, receiver.url("prune"))
    for name in ("old", "recent", "pending"):
        await _contact(client, name)
    await start_deliverer(backoff_base_s=60)
    await until(lambda: len(receiver.at("prune")) == 3, what="three attempts")
    items = await until(lambda: _with_attempts(client, ep["id"], 1), what="the failure recorded")
    oldest = min(d["id"] for d in items)
    async with db.transaction() as s:
        await s.execute(
            update(Delivery)
            .where(Delivery.id == oldest)
            .values(next_attempt_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=31))
        )
        gone = await service.prune_deliveries(s, before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    assert gone == 1
    left = await _deliveries(client, ep["id"])
    assert [d["status"] for d in left] == ["pending", "succeeded"]


async def test_the_embedded_server_runs_a_deliverer(db_url: str, receiver: Receiver) -> None:

    app = create_app(make_settings(db_url, embedded_worker=True))
    deliverers = [c for c in app.state.services.components if isinstance(c, Deliverer)]
    assert len(deliverers) == 1
    web_only = create_app(make_settings(db_url)).state.services.components
    assert not any(isinstance(c, Deliverer) for c in web_only)

    async with app.router.lifespan_context(app):
        async with app.state.services.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            ep = await service.create_endpoint(
                s, workspace_id=ws.id, url=receiver.url("embedded"), events=["*"], description=""
            )
            await emit(s, ws.id, "suppression.created", {"address": "x@example.test", "reason": "bounce"})
        got = await until(
            lambda: receiver.at("embedded"), within=5.0, what="a delivery from the embedded deliverer"
        )
        assert json.loads(got[0].body)["type"] == "suppression.created"
        assert verify_signature(got[0].headers["switchboard-signature"], got[0].body, ep.secret)

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from sqlalchemy import func, select, update

from server.db import Database
from server.messages.models import Message
from tests.conftest import ClientFactory
from tests.messages.support import contact, events, template


async def _count(db: Database) -> int:
    async with db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(Message))).scalar_one()


async def test_send_now_renders_addresses_and_queues(client: httpx.AsyncClient, db: Database) -> None:
    c = await contact(client, attributes={"plan": "pro"})
    tpl = await template(client, subject="Hi {{ name }}", body="{{ attributes.plan }} / {{ code }}")
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": c["id"], "channel": "email", "template_id": tpl["id"], "variables": {"code": 42}},
    )
    assert r.status_code == 202, r.text
    m = r.json()
    assert m["status"] == "queued"
    assert (m["to"], m["subject"], m["body"]) == ("ada@example.test", "Hi Ada", "pro / 42")
    assert (m["template_id"], m["variables"], m["attempts"], m["reason"]) == (
        tpl["id"],
        {"code": 42},
        0,
        None,
    )
    assert {"provider", "provider_message_id", "send_at", "created_at", "updated_at", "sent_at"} <= set(m)

    assert await events(db, "message.created") == [
        {
            "message_id": m["id"],
            "contact_id": c["id"],
            "channel": "email",
            "status": "queued",
            "provider": None,
            "reason": None,
        }
    ]
    detail = (await client.get(f"/api/v1/messages/{m['id']}")).json()
    assert [e["status"] for e in detail["events"]] == ["queued"]
    assert {k: v for k, v in detail.items() if k != "events"} == m

    sms = await client.post(
        "/api/v1/messages",
        json={"contact_id": c["id"], "channel": "sms", "body": "Code {{ code }}", "variables": {"code": 7}},
    )
    assert (sms.json()["to"], sms.json()["body"]) == ("+14155552671", "Code 7")
    chat = await client.post(
        "/api/v1/messages", json={"contact_id": c["id"], "channel": "chat", "body": "New: {{ email }}"}
    )
    assert (chat.json()["to"], chat.json()["body"], chat.json()["status"]) == (
        "",
        "New: ada@example.test",
        "queued",
    )


async def test_future_send_at_is_scheduled(client: httpx.AsyncClient, db: Database) -> None:
    c = await contact(client)
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    r = await client.post(
        "/api/v1/messages",
        json={
            "contact_id": c["id"],
            "channel": "email",
            "subject": "Later",
            "body": "x",
            "send_at": when.isoformat(),
        },
    )
    assert r.status_code == 202
    assert r.json()["status"] == "scheduled"
    assert dt.datetime.fromisoformat(r.json()["send_at"]) == when
    async with db.transaction() as s:
        m = await s.get(Message, r.json()["id"])
        assert m is not None and m.next_attempt_at == when


async def test_missing_variable_fails_the_message_with_a_reason(
    client: httpx.AsyncClient, db: Database
) -> None:
    c = await contact(client)
    tpl = await template(client, body="Your code is {{ code }}")
    r = await client.post(
        "/api/v1/messages", json={"contact_id": c["id"], "channel": "email", "template_id": tpl["id"]}
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "failed"
    assert r.json()["reason"] == "template error in body: 'code' is undefined"
    (created,) = await events(db, "message.created")
    assert (created["status"], created["reason"]) == ("failed", "template error in body: 'code' is undefined")
    detail = (await client.get(f"/api/v1/messages/{r.json()['id']}")).json()
    assert [(e["status"], e["reason"]) for e in detail["events"]] == [("failed", r.json()["reason"])]


async def test_contact_without_address_fails_the_message(client: httpx.AsyncClient) -> None:
    c = await contact(client, email=None, phone=None)
    r = await client.post(
        "/api/v1/messages", json={"contact_id": c["id"], "channel": "email", "subject": "s", "body": "b"}
    )
    assert (r.json()["status"], r.json()["reason"]) == ("failed", "contact has no email address")
    r = await client.post(
        "/api/v1/messages", json={"contact_id": c["id"], "channel": "whatsapp", "body": "b"}
    )
    assert (r.json()["status"], r.json()["reason"]) == ("failed", "contact has no phone number")


async def test_bad_references_and_unsafe_inline_templates_are_422(
    make_client: ClientFactory, db: Database
) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    c = await contact(acme)
    foreign = await contact(other)
    foreign_tpl = await template(other)
    sms_tpl = await template(acme, channel="sms", name="SMS")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"contact_id": foreign["id"], "channel": "email", "subject": "s", "body": "b"}, "contact_id"),
        ({"contact_id": c["id"], "channel": "email", "template_id": foreign_tpl["id"]}, "template_id"),
        ({"contact_id": c["id"], "channel": "email", "template_id": sms_tpl["id"]}, "template_id"),
        ({"contact_id": c["id"], "channel": "email", "body": "{{ ''.__class__ }}"}, "body"),
        ({"contact_id": c["id"], "channel": "email", "body": "{% if %}"}, "body"),
        ({"contact_id": c["id"], "channel": "email", "template_id": sms_tpl["id"], "body": "x"}, "body"),
        ({"contact_id": c["id"], "channel": "fax", "body": "x"}, "channel"),
    ]
    for body, field in cases:
        r = await acme.post("/api/v1/messages", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in {e["field"] for e in r.json()["errors"]} or field == "body", r.json()
    assert await _count(db) == 0


async def test_idempotent_replay_and_key_reuse(client: httpx.AsyncClient, db: Database) -> None:
    c = await contact(client)
    body = {
        "contact_id": c["id"],
        "channel": "email",
        "subject": "Hi",
        "body": "once",
        "variables": {"a": 1, "b": 2},
    }
    headers = {"Idempotency-Key": "order-1234"}
    first = await client.post("/api/v1/messages", json=body, headers=headers)
    assert first.status_code == 202
    assert first.json()["idempotency_key"] == "order-1234"
    # The same body with its keys in another order is the same request.
    reordered = {"variables": {"b": 2, "a": 1}, **{k: v for k, v in body.items() if k != "variables"}}
    again = await client.post("/api/v1/messages", json=reordered, headers=headers)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # The first response is replayed even after the message moved on.
    await client.post(f"/api/v1/messages/{first.json()['id']}/cancel")
    assert (await client.post("/api/v1/messages", json=body, headers=headers)).json()["status"] == "queued"

    other = await client.post("/api/v1/messages", json={**body, "body": "twice"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await _count(db) == 1
    # Another key, or no key, is another message.
    assert (
        await client.post("/api/v1/messages", json=body, headers={"Idempotency-Key": "order-1235"})
    ).json()["id"] != first.json()["id"]
    assert (await client.post("/api/v1/messages", json=body)).status_code == 202
    assert await _count(db) == 3
    assert (
        await client.post("/api/v1/messages", json=body, headers={"Idempotency-Key": "x" * 201})
    ).status_code == 422


async def test_keys_are_per_workspace(make_client: ClientFactory, db: Database) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    for client in (acme, other):
        c = await contact(client)
        r = await client.post(
            "/api/v1/messages",
            json={"contact_id": c["id"], "channel": "sms", "body": "x"},
            headers={"Idempotency-Key": "shared"},
        )
        assert r.status_code == 202
    assert await _count(db) == 2


async def test_concurrent_posts_with_one_key_create_one_message(
    client: httpx.AsyncClient, db: Database
) -> None:
    c = await contact(client)
    body = {"contact_id": c["id"], "channel": "email", "subject": "Hi", "body": "race"}
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/messages", json=body, headers={"Idempotency-Key": "race-1"})
            for _ in range(10)
        )
    )
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.text for r in responses}) == 1
    assert await _count(db) == 1
    assert len(await events(db, "message.created")) == 1


async def test_cancel_only_while_scheduled_or_queued(client: httpx.AsyncClient, db: Database) -> None:
    c = await contact(client)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    ids = []
    for extra in ({"send_at": later}, {}, {}):
        r = await client.post(
            "/api/v1/messages", json={"contact_id": c["id"], "channel": "sms", "body": "x", **extra}
        )
        ids.append(r.json()["id"])
    scheduled, queued, sent = ids
    async with db.transaction() as s:
        await s.execute(update(Message).where(Message.id == sent).values(status="sent"))

    for mid in (scheduled, queued):
        r = await client.post(f"/api/v1/messages/{mid}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled"
        detail = (await client.get(f"/api/v1/messages/{mid}")).json()
        assert [e["status"] for e in detail["events"]][-1] == "canceled"
        r = await client.post(f"/api/v1/messages/{mid}/cancel")
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
    r = await client.post(f"/api/v1/messages/{sent}/cancel")
    assert r.status_code == 409
    assert "sent" in r.json()["detail"]
    statuses = [e["status"] for e in await events(db, "message.status")]
    assert statuses == ["canceled", "canceled"]


async def test_list_filters_and_pagination(client: httpx.AsyncClient) -> None:
    a = await contact(client)
    b = await contact(client, name="Bob", email="bob@example.test", phone=None)
    made = []
    for who, channel in ((a, "email"), (b, "email"), (a, "sms"), (b, "sms"), (a, "chat")):
        r = await client.post(
            "/api/v1/messages",
            json={"contact_id": who["id"], "channel": channel, "subject": "s", "body": "b"},
        )
        made.append(r.json())
    page = (await client.get("/api/v1/messages", params={"limit": 2})).json()
    assert [m["id"] for m in page["items"]] == [made[4]["id"], made[3]["id"]]
    seen = [m["id"] for m in page["items"]]
    while page["next_cursor"]:
        page = (
            await client.get("/api/v1/messages", params={"limit": 2, "cursor": page["next_cursor"]})
        ).json()
        seen += [m["id"] for m in page["items"]]
    assert seen == [m["id"] for m in reversed(made)]
    r = await client.get("/api/v1/messages", params={"contact_id": a["id"], "channel": "sms"})
    assert [m["id"] for m in r.json()["items"]] == [made[2]["id"]]
    r = await client.get("/api/v1/messages", params={"status": "failed"})
    assert [m["id"] for m in r.json()["items"]] == [made[3]["id"]]  # Bob has no phone
    assert (await client.get("/api/v1/messages", params={"status": "lost"})).status_code == 422


async def test_other_workspace_gets_404_and_viewer_403(make_client: ClientFactory) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("admin", workspace="Other")
    viewer = await make_client("viewer", workspace="Acme")
    c = await contact(acme)
    m = (
        await acme.post("/api/v1/messages", json={"contact_id": c["id"], "channel": "sms", "body": "x"})
    ).json()
    assert (await other.get(f"/api/v1/messages/{m['id']}")).status_code == 404
    assert (await other.post(f"/api/v1/messages/{m['id']}/cancel")).status_code == 404
    assert (await other.get("/api/v1/messages")).json()["items"] == []
    assert (await acme.get("/api/v1/messages/999999")).status_code == 404

    assert (await viewer.get(f"/api/v1/messages/{m['id']}")).status_code == 200
    assert (await viewer.get("/api/v1/messages")).status_code == 200
    r = await viewer.post("/api/v1/messages", json={"contact_id": c["id"], "channel": "sms", "body": "x"})
    assert r.status_code == 403
    assert (await viewer.post(f"/api/v1/messages/{m['id']}/cancel")).status_code == 403
    assert (await acme.get(f"/api/v1/messages/{m['id']}")).json()["status"] == "queued"

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.contacts import changes, merge
from server.contacts.models import Audit, Contact, ContactIdentity
from server.db import Database
from server.events.models import Event
from server.messages.models import Message
from tests.conftest import ClientFactory


async def _create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/contacts", json=fields)
    assert r.status_code == 201, r.text
    return r.json()


async def _messages(db: Database, contact: dict[str, Any], n: int) -> list[int]:
    async with db.transaction() as s:
        ws = (await s.execute(select(Contact.workspace_id).where(Contact.id == contact["id"]))).scalar_one()
        rows = [
            Message(workspace_id=ws, contact_id=contact["id"], channel="email", subject=f"m{i}")
            for i in range(n)
        ]
        s.add_all(rows)
        await s.flush()
        return [m.id for m in rows]


async def _rows(db: Database) -> dict[str, Any]:
    """Who owns what: messages, audit rows and identities by contact."""
    async with db.transaction() as s:
        messages = dict((await s.execute(select(Message.id, Message.contact_id))).all())
        audit = dict(
            (await s.execute(select(Audit.contact_id, func.count()).group_by(Audit.contact_id))).all()
        )
        idents = sorted((await s.execute(select(ContactIdentity.contact_id, ContactIdentity.value))).all())
        contacts = sorted((await s.execute(select(Contact.id))).scalars())
    return {"messages": messages, "audit": audit, "identities": idents, "contacts": contacts}


@pytest.fixture
async def three(client: httpx.AsyncClient, db: Database) -> dict[str, Any]:
    a = await _create(
        client,
        name="",
        email="ada@example.test",
        phone="+14155552671",
        tags=["vip"],
        attributes={"plan": "pro"},
    )
    b = await _create(
        client,
        name="Ada Lovelace",
        email="Ada.L@Example.test",
        phone="+442079460958",
        tags=["lead", "vip"],
        attributes={"plan": "free", "city": "London"},
    )
    c = await _create(client, name="A. Lovelace", email="countess@example.test")
    r = await client.patch(f"/api/v1/contacts/{b['id']}", json={"attributes": {"score": 7}})
    assert r.status_code == 200
    b = r.json()
    r = await client.post(
        f"/api/v1/contacts/{b['id']}/identities", json={"kind": "email", "value": "ada@work.test"}
    )
    assert r.status_code == 201, r.text
    b["version"] += 1
    return {
        "a": a,
        "b": b,
        "c": c,
        "msgs": {
            "a": await _messages(db, a, 1),
            "b": await _messages(db, b, 2),
            "c": await _messages(db, c, 1),
        },
    }


async def test_merge_moves_messages_history_tags_and_addresses(
    client: httpx.AsyncClient, db: Database, three: dict[str, Any]
) -> None:
    a, b, c = three["a"], three["b"], three["c"]
    before = await _rows(db)
    async with db.transaction() as s:
        last_event = (await s.execute(select(func.max(Event.id)))).scalar_one()

    r = await client.post(
        f"/api/v1/contacts/{a['id']}/merge", json={"from": [b["id"], c["id"]], "fields": {"phone": b["id"]}}
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id"] == a["id"]
    assert got["name"] == "Ada Lovelace"  # the survivor's was empty: filled from the first merged one
    assert got["email"] == "ada@example.test"  # the survivor's by default
    assert got["phone"] == "+442079460958"  # chosen from b
    assert got["tags"] == ["vip", "lead"]
    assert got["attributes"] == {"plan": "pro", "city": "London", "score": 7}
    assert got["version"] == max(a["version"], b["version"], c["version"]) + 1
    assert r.headers["etag"] == f'"{got["version"]}"'

    for gone in (b, c):
        assert (await client.get(f"/api/v1/contacts/{gone['id']}")).status_code == 404
    after = await _rows(db)
    assert after["contacts"] == [a["id"]]
    assert set(after["messages"].values()) == {a["id"]}
    assert sorted(after["messages"]) == sorted(before["messages"])
    # Every audit row moved, plus the merge's own rows.
    assert after["audit"][a["id"]] >= sum(before["audit"].values())
    idents = (await client.get(f"/api/v1/contacts/{a['id']}/identities")).json()["items"]
    assert [(i["kind"], i["value"], i["primary"]) for i in idents if i["primary"]] == [
        ("email", "ada@example.test", True),
        ("phone", "+442079460958", True),
    ]
    assert sorted((i["kind"], i["value"]) for i in idents if not i["primary"]) == [
        ("email", "ada.l@example.test"),
        ("email", "ada@work.test"),
        ("email", "countess@example.test"),
        ("phone", "+14155552671"),
    ]

    history = (await client.get(f"/api/v1/contacts/{a['id']}/history", params={"limit": 500})).json()["items"]
    merged_from = [h["new"] for h in history if h["field"] == "merged_from"]
    assert sorted(m["id"] for m in merged_from) == sorted([b["id"], c["id"]])
    assert {"name", "phone", "tags", "attributes"} <= {
        h["field"] for h in history if h["version"] == got["version"]
    }
    assert any(h["field"] == "attributes.score" for h in history)  # b's own history came along

    async with db.transaction() as s:
        events = list(
            (await s.execute(select(Event).where(Event.id > last_event).order_by(Event.id))).scalars()
        )
    assert [(e.type, e.data["contact_id"]) for e in events] == [
        ("contact.deleted", b["id"]),
        ("contact.deleted", c["id"]),
        ("contact.updated", a["id"]),
    ]
    assert events[0].data["merged_into"] == a["id"]
    assert events[2].data["merged_from"] == [b["id"], c["id"]]
    assert events[2].data["version"] == got["version"]
    assert events[2].data["changed"]["phone"] == "+442079460958"


async def test_choosing_a_merged_contacts_email_makes_the_survivors_an_extra_one(
    client: httpx.AsyncClient, three: dict[str, Any]
) -> None:
    a, b = three["a"], three["b"]
    r = await client.post(
        f"/api/v1/contacts/{a['id']}/merge",
        json={"from": [b["id"]], "fields": {"email": b["id"], "attributes": b["id"]}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "Ada.L@example.test"
    assert r.json()["attributes"] == {"plan": "free", "city": "London", "score": 7}
    idents = (await client.get(f"/api/v1/contacts/{a['id']}/identities")).json()["items"]
    assert ("email", "ada@example.test") in [(i["kind"], i["value"]) for i in idents if not i["primary"]]
    # The old primary is now an extra identity, so no other contact may take it.
    r = await client.post("/api/v1/contacts", json={"name": "X", "email": "ADA@example.test"})
    assert r.status_code == 409


async def test_merge_is_one_transaction(
    db: Database, three: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = three["a"], three["b"], three["c"]
    before = await _rows(db)

    async def boom(*_args: Any, **_kw: Any) -> None:
        raise RuntimeError("the event log is down")

    monkeypatch.setattr(changes, "emit_many", boom)  # fails after every row was moved
    async with db.transaction() as s:
        ws = (await s.execute(select(Contact.workspace_id).where(Contact.id == a["id"]))).scalar_one()
    with pytest.raises(RuntimeError):
        async with db.transaction() as s:
            await merge.merge_contacts(
                s, workspace_id=ws, user_id=None, survivor_id=a["id"], from_ids=[b["id"], c["id"]]
            )
    assert await _rows(db) == before


async def test_merge_refuses_other_workspaces_itself_and_bad_fields(
    make_client: ClientFactory, db: Database
) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    viewer = await make_client("viewer", workspace="Acme")
    a = await _create(acme, name="A", email="a@example.test")
    b = await _create(acme, name="B", email="b@example.test")
    x = await _create(other, name="X", email="x@example.test")
    before = await _rows(db)

    r = await acme.post(f"/api/v1/contacts/{a['id']}/merge", json={"from": [b["id"], x["id"]]})
    assert r.status_code == 404 and str(x["id"]) in r.json()["detail"]
    assert (
        await other.post(f"/api/v1/contacts/{a['id']}/merge", json={"from": [x["id"]]})
    ).status_code == 404
    assert (
        await other.post(f"/api/v1/contacts/{x['id']}/merge", json={"from": [a["id"]]})
    ).status_code == 404
    r = await acme.post(f"/api/v1/contacts/{a['id']}/merge", json={"from": [a["id"]]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from"
    for body in (
        {"from": []},
        {"from": [b["id"]], "fields": {"tags": b["id"]}},
        {"from": [b["id"]], "fields": {"name": 999999}},
        {"into": [b["id"]]},
    ):
        assert (await acme.post(f"/api/v1/contacts/{a['id']}/merge", json=body)).status_code == 422, body
    assert (
        await viewer.post(f"/api/v1/contacts/{a['id']}/merge", json={"from": [b["id"]]})
    ).status_code == 403
    assert await _rows(db) == before


async def test_crossed_concurrent_merges_do_not_deadlock(client: httpx.AsyncClient, db: Database) -> None:
    for i in range(4):
        a = await _create(client, name=f"A{i}", email=f"a{i}@example.test")
        b = await _create(client, name=f"B{i}", email=f"b{i}@example.test")
        r1, r2 = await asyncio.gather(
            client.post(f"/api/v1/contacts/{a['id']}/merge", json={"from": [b["id"]]}),
            client.post(f"/api/v1/contacts/{b['id']}/merge", json={"from": [a["id"]]}),
        )
        assert sorted([r1.status_code, r2.status_code]) == [200, 404], (r1.text, r2.text)
    assert len((await _rows(db))["contacts"]) == 4

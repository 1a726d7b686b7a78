from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import ClientFactory


async def _create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/contacts", json=fields)
    assert r.status_code == 201, r.text
    return r.json()


async def _add(client: httpx.AsyncClient, contact_id: int, kind: str, value: str) -> httpx.Response:
    return await client.post(f"/api/v1/contacts/{contact_id}/identities", json={"kind": kind, "value": value})


async def test_extra_identities_are_listed_after_the_primary_ones(client: httpx.AsyncClient) -> None:
    c = await _create(client, name="Ada", email="ada@example.test", phone="+14155552671")
    r = await _add(client, c["id"], "email", "Ada@Work.test")
    assert r.status_code == 201, r.text
    assert r.json()["value"] == "ada@work.test" and r.json()["primary"] is False
    r = await _add(client, c["id"], "phone", "+44 20 7946 0958")
    assert r.status_code == 201 and r.json()["value"] == "+442079460958"
    items = (await client.get(f"/api/v1/contacts/{c['id']}/identities")).json()["items"]
    assert [(i["kind"], i["value"], i["primary"]) for i in items] == [
        ("email", "ada@example.test", True),
        ("phone", "+14155552671", True),
        ("email", "ada@work.test", False),
        ("phone", "+442079460958", False),
    ]
    # Each change is a contact change: version, history and event.
    got = (await client.get(f"/api/v1/contacts/{c['id']}")).json()
    assert got["version"] == 3
    history = (await client.get(f"/api/v1/contacts/{c['id']}/history")).json()["items"]
    assert history[0]["field"] == "identities" and history[0]["new"][-1]["value"] == "+442079460958"

    assert (await client.delete(f"/api/v1/contacts/{c['id']}/identities/{items[2]['id']}")).status_code == 204
    assert (await client.delete(f"/api/v1/contacts/{c['id']}/identities/{items[2]['id']}")).status_code == 404
    items = (await client.get(f"/api/v1/contacts/{c['id']}/identities")).json()["items"]
    assert [i["value"] for i in items] == ["ada@example.test", "+14155552671", "+442079460958"]


async def test_searching_contacts_finds_extra_identities_too(make_client: ClientFactory) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    ada = await _create(acme, name="Ada", email="ada@example.test")
    await _create(acme, name="Grace", email="grace@example.test")
    assert (await _add(acme, ada["id"], "email", "Countess@Work.test")).status_code == 201
    assert (await _add(acme, ada["id"], "phone", "+44 20 7946 0958")).status_code == 201
    theirs = await _create(other, name="Somebody", email="someone@elsewhere.test")
    assert (await _add(other, theirs["id"], "email", "countess@other.test")).status_code == 201

    async def found(client: httpx.AsyncClient, q: str) -> list[str]:
        r = await client.get("/api/v1/contacts", params={"q": q})
        assert r.status_code == 200, r.text
        return [c["name"] for c in r.json()["items"]]

    assert await found(acme, "COUNTESS@work") == ["Ada"]
    assert await found(acme, "7946") == ["Ada"]
    assert await found(acme, "countess") == ["Ada"]  # not the other workspace's identity
    assert await found(acme, "grace") == ["Grace"]
    assert await found(other, "countess") == ["Somebody"]


async def test_every_address_is_unique_across_primary_and_extra_identities(client: httpx.AsyncClient) -> None:
    ada = await _create(client, name="Ada", email="ada@example.test", phone="+14155552671")
    bob = await _create(client, name="Bob", email="bob@example.test")
    assert (await _add(client, ada["id"], "email", "ada.extra@example.test")).status_code == 201
    assert (await _add(client, ada["id"], "phone", "+442079460958")).status_code == 201

    # extra vs extra, extra vs another's primary, extra vs own primary
    for cid, kind, value, field in [
        (bob["id"], "email", "ADA.EXTRA@example.test", "email"),
        (bob["id"], "email", "Ada@Example.test", "email"),
        (bob["id"], "phone", "+14155552671", "phone"),
        (bob["id"], "phone", "+442079460958", "phone"),
        (ada["id"], "email", "ada@example.test", "email"),
    ]:
        r = await _add(client, cid, kind, value)
        assert r.status_code == 409, (kind, value, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == field
    # primary (create or patch) vs extra
    r = await client.post("/api/v1/contacts", json={"name": "C", "email": "ada.extra@EXAMPLE.test"})
    assert r.status_code == 409
    r = await client.post("/api/v1/contacts", json={"name": "C", "phone": "+44 20 7946 0958"})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "phone"
    r = await client.patch(f"/api/v1/contacts/{bob['id']}", json={"email": "ada.extra@example.test"})
    assert r.status_code == 409
    r = await client.patch(f"/api/v1/contacts/{ada['id']}", json={"phone": "+442079460958"})
    assert r.status_code == 409  # its own extra phone: delete it first
    # Unrelated patches of a contact with identities still pass.
    r = await client.patch(
        f"/api/v1/contacts/{ada['id']}", json={"name": "Ada L.", "email": "ada@example.test"}
    )
    assert r.status_code == 200, r.text
    assert (await _add(client, bob["id"], "email", "not an email")).status_code == 422
    assert (
        await client.post(f"/api/v1/contacts/{bob['id']}/identities", json={"kind": "fax", "value": "1"})
    ).status_code == 422


async def test_identities_belong_to_one_workspace(make_client: ClientFactory) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    viewer = await make_client("viewer", workspace="Acme")
    a = await _create(acme, name="A")
    assert (await _add(acme, a["id"], "email", "shared@example.test")).status_code == 201
    x = await _create(other, name="X")
    assert (await _add(other, x["id"], "email", "shared@example.test")).status_code == 201
    assert (await _add(other, a["id"], "email", "x2@example.test")).status_code == 404
    assert (await other.get(f"/api/v1/contacts/{a['id']}/identities")).status_code == 404
    assert (await viewer.get(f"/api/v1/contacts/{a['id']}/identities")).status_code == 200
    assert (await _add(viewer, a["id"], "email", "v@example.test")).status_code == 403


async def test_concurrent_claims_of_one_address_leave_one_owner(client: httpx.AsyncClient) -> None:
    """Primary and extra addresses live in two tables; the check runs under the workspace lock."""
    holder = await _create(client, name="Holder")
    for i in range(8):
        address = f"race{i}@example.test"
        as_primary, as_extra = await asyncio.gather(
            client.post("/api/v1/contacts", json={"name": f"R{i}", "email": address}),
            _add(client, holder["id"], "email", address),
        )
        assert sorted([as_primary.status_code, as_extra.status_code]) == [201, 409], (
            as_primary.text,
            as_extra.text,
        )

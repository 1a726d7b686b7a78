from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from server.events.models import Event
from tests.conftest import ClientFactory


async def _create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Ada Lovelace", "email": "ada@example.test", "phone": "+44 20 7946 0958", "tags": ["vip"]}
    body.update(fields)
    r = await client.post("/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_normalises_phone_and_returns_etag(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/contacts",
        json={
            "name": "Ada",
            "email": "Ada@Example.test",
            "phone": "+1 (415) 555-2671",
            "attributes": {"plan": "pro"},
        },
    )
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["phone"] == "+14155552671"
    assert c["version"] == 1
    assert c["attributes"] == {"plan": "pro"}
    assert r.headers["etag"] == '"1"'
    got = await client.get(f"/api/v1/contacts/{c['id']}")
    assert got.json() == c


async def test_email_is_unique_per_workspace_case_insensitively(make_client: ClientFactory) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("agent", workspace="Other")
    await _create(acme, email="dup@example.test")
    r = await acme.post("/api/v1/contacts", json={"name": "B", "email": "DUP@example.test"})
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "email"
    # Another workspace may hold the same address.
    r = await other.post("/api/v1/contacts", json={"name": "C", "email": "dup@example.test"})
    assert r.status_code == 201


async def test_list_search_tag_and_cursor_pagination(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await _create(
            client,
            name=f"Person {i}",
            email=f"p{i}@example.test",
            phone=None,
            tags=["even" if i % 2 == 0 else "odd"],
        )
    await _create(client, name="Grace Hopper", email="grace@navy.test", phone="+12025550173", tags=["vip"])

    r = await client.get("/api/v1/contacts", params={"q": "grace"})
    assert [c["name"] for c in r.json()["items"]] == ["Grace Hopper"]
    r = await client.get("/api/v1/contacts", params={"q": "2025550"})
    assert [c["name"] for c in r.json()["items"]] == ["Grace Hopper"]
    r = await client.get("/api/v1/contacts", params={"tag": "even"})
    assert sorted(c["name"] for c in r.json()["items"]) == ["Person 0", "Person 2", "Person 4", "Person 6"]

    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/contacts", params=params)).json()
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == 8 and len(set(seen)) == 8
    assert seen == sorted(seen, reverse=True)


async def test_patch_disjoint_fields_merge(client: httpx.AsyncClient) -> None:
    c = await _create(client)
    # Agent A changes the name at version 1.
    r = await client.patch(
        f"/api/v1/contacts/{c['id']}", json={"name": "Ada K."}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    # Agent B, still on version 1, changes tags: no overlap → merged.
    r = await client.patch(
        f"/api/v1/contacts/{c['id']}", json={"tags": ["vip", "beta"]}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Ada K." and body["tags"] == ["vip", "beta"] and body["version"] == 3
    assert r.headers["etag"] == '"3"'


async def test_patch_overlapping_fields_conflict(client: httpx.AsyncClient) -> None:
    c = await _create(client)
    await client.patch(f"/api/v1/contacts/{c['id']}", json={"name": "Theirs"}, headers={"If-Match": '"1"'})
    r = await client.patch(
        f"/api/v1/contacts/{c['id']}", json={"name": "Mine", "tags": ["x"]}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 409
    body = r.json()
    assert body["conflicts"] == [{"field": "name", "yours": "Mine", "theirs": "Theirs"}]
    assert body["current"]["name"] == "Theirs" and body["current"]["version"] == 2
    # Nothing of the rejected patch was applied.
    assert (await client.get(f"/api/v1/contacts/{c['id']}")).json()["tags"] == ["vip"]


async def test_patch_attribute_keys_merge_independently(client: httpx.AsyncClient) -> None:
    c = await _create(client, attributes={"plan": "free", "city": "London"})
    r = await client.patch(
        f"/api/v1/contacts/{c['id']}", json={"attributes": {"plan": "pro"}}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200
    r = await client.patch(
        f"/api/v1/contacts/{c['id']}", json={"attributes": {"city": None}}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["attributes"] == {"plan": "pro"}
    r = await client.patch(
        f"/api/v1/contacts/{c['id']}", json={"attributes": {"plan": "team"}}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 409
    assert r.json()["conflicts"][0]["field"] == "attributes.plan"


async def test_patch_without_if_match_is_last_writer_wins_and_unknown_version_is_412(
    client: httpx.AsyncClient,
) -> None:
    c = await _create(client)
    await client.patch(f"/api/v1/contacts/{c['id']}", json={"name": "One"})
    r = await client.patch(f"/api/v1/contacts/{c['id']}", json={"name": "Two"})
    assert r.status_code == 200 and r.json()["name"] == "Two"
    r = await client.patch(f"/api/v1/contacts/{c['id']}", json={"name": "X"}, headers={"If-Match": '"99"'})
    assert r.status_code == 412
    r = await client.patch(f"/api/v1/contacts/{c['id']}", json={"name": "X"}, headers={"If-Match": "garbage"})
    assert r.status_code == 400


async def test_history_newest_first_and_events_written(client: httpx.AsyncClient, db: Any) -> None:
    c = await _create(client)
    await client.patch(f"/api/v1/contacts/{c['id']}", json={"name": "Ada B."})
    await client.patch(f"/api/v1/contacts/{c['id']}", json={"phone": "+33142685300"})
    h = (await client.get(f"/api/v1/contacts/{c['id']}/history")).json()["items"]
    assert [(i["field"], i["new"]) for i in h[:2]] == [("phone", "+33142685300"), ("name", "Ada B.")]
    assert h[1]["old"] == "Ada Lovelace"
    me = (await client.get("/api/v1/me")).json()
    assert h[0]["user_id"] == me["id"]

    async with db.transaction() as s:
        events = list((await s.execute(select(Event).order_by(Event.id))).scalars())
    assert [e.type for e in events] == ["contact.created", "contact.updated", "contact.updated"]
    assert [e.id for e in events] == [1, 2, 3]
    assert events[2].data == {
        "contact_id": c["id"],
        "version": 3,
        "changed": {"phone": "+33142685300"},
        "by": me["id"],
    }
    assert events[0].data["changed"]["email"] == "ada@example.test"


async def test_delete_then_404(client: httpx.AsyncClient) -> None:
    c = await _create(client)
    r = await client.delete(f"/api/v1/contacts/{c['id']}")
    assert r.status_code == 204 and r.content == b""
    assert (await client.get(f"/api/v1/contacts/{c['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/contacts/{c['id']}")).status_code == 404


async def test_viewer_reads_but_cannot_write(make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    viewer = await make_client("viewer")
    c = await _create(agent)
    assert (await viewer.get(f"/api/v1/contacts/{c['id']}")).status_code == 200
    for r in (
        await viewer.post("/api/v1/contacts", json={"name": "x"}),
        await viewer.patch(f"/api/v1/contacts/{c['id']}", json={"name": "x"}),
        await viewer.delete(f"/api/v1/contacts/{c['id']}"),
    ):
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"


async def test_other_workspace_gets_404_on_every_contact_route(make_client: ClientFactory) -> None:
    acme = await make_client("admin", workspace="Acme")
    evil = await make_client("admin", workspace="Evil")
    c = await _create(acme)
    cid = c["id"]
    responses = [
        await evil.get(f"/api/v1/contacts/{cid}"),
        await evil.patch(f"/api/v1/contacts/{cid}", json={"name": "pwned"}),
        await evil.delete(f"/api/v1/contacts/{cid}"),
        await evil.get(f"/api/v1/contacts/{cid}/history"),
    ]
    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert (await evil.get("/api/v1/contacts")).json()["items"] == []
    assert (await evil.get("/api/v1/contacts", params={"q": "ada"})).json()["items"] == []
    assert (await acme.get(f"/api/v1/contacts/{cid}")).json()["name"] == "Ada Lovelace"


async def test_bad_input_answers_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/contacts", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    r = await client.post("/api/v1/contacts", json={"name": 5, "email": "nope", "unknown": 1, "tags": "x"})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"name", "email", "unknown", "tags"} <= fields
    r = await client.post("/api/v1/contacts", json={"phone": "12345"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "phone"
    r = await client.patch("/api/v1/contacts/1", json={})
    assert r.status_code == 422
    r = await client.get("/api/v1/contacts/abc")
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/contacts", content=b"x" * (1024 * 1024 + 10), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    r = await client.get("/api/v1/contacts", params={"limit": "many"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.limit"
    r = await client.get("/api/v1/contacts", params={"cursor": "!!!"})
    assert r.status_code == 422

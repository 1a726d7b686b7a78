from __future__ import annotations

import httpx

from tests.conftest import ClientFactory


async def test_create_shows_the_secret_once_and_never_again(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/endpoints",
        json={"url": "https://hooks.example.test/in", "events": ["contact.created", "message.status"]},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    assert created["enabled"] is True
    assert created["events"] == ["contact.created", "message.status"]
    one = (await client.get(f"/api/v1/endpoints/{created['id']}")).json()
    listed = (await client.get("/api/v1/endpoints")).json()["items"]
    assert "secret" not in one and all("secret" not in e for e in listed)
    assert [e["id"] for e in listed] == [created["id"]]
    assert created["secret"] not in (await client.get("/api/v1/endpoints")).text


async def test_urls_and_event_types_are_validated(client: httpx.AsyncClient) -> None:
    for url in ("ftp://example.test/x", "javascript:alert(1)", "https://", "not a url", "http://h:99999/"):
        r = await client.post("/api/v1/endpoints", json={"url": url, "events": ["*"]})
        assert r.status_code == 422, url
        assert r.json()["errors"][0]["field"] == "url"
    r = await client.post(
        "/api/v1/endpoints", json={"url": "http://127.0.0.1:9/x", "events": ["contact.exploded"]}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "events"
    r = await client.post("/api/v1/endpoints", json={"url": "http://127.0.0.1:9/x", "events": []})
    assert r.status_code == 422
    r = await client.post("/api/v1/endpoints", json={"url": "http://127.0.0.1:9/x", "events": ["*"], "x": 1})
    assert r.status_code == 422


async def test_only_admins_manage_endpoints_and_only_their_workspace(make_client: ClientFactory) -> None:
    admin = await make_client("admin", workspace="Acme")
    agent = await make_client("agent", workspace="Acme")
    stranger = await make_client("admin", workspace="Other")
    ep = (await admin.post("/api/v1/endpoints", json={"url": "https://a.test/h", "events": ["*"]})).json()
    assert (await agent.get("/api/v1/endpoints")).status_code == 403
    assert (
        await agent.post("/api/v1/endpoints", json={"url": "https://a.test/h", "events": ["*"]})
    ).status_code == 403
    for method, path in [
        ("GET", f"/api/v1/endpoints/{ep['id']}"),
        ("PATCH", f"/api/v1/endpoints/{ep['id']}"),
        ("DELETE", f"/api/v1/endpoints/{ep['id']}"),
        ("POST", f"/api/v1/endpoints/{ep['id']}/rotate-secret"),
        ("GET", f"/api/v1/endpoints/{ep['id']}/deliveries"),
    ]:
        kwargs = {"json": {"description": "x"}} if method == "PATCH" else {}
        r = await stranger.request(method, path, **kwargs)
        assert r.status_code == 404, (method, path, r.text)
    assert (await stranger.get("/api/v1/endpoints")).json()["items"] == []


async def test_patch_changes_url_and_events_and_delete_answers_204(client: httpx.AsyncClient) -> None:
    ep = (await client.post("/api/v1/endpoints", json={"url": "https://a.test/h", "events": ["*"]})).json()
    r = await client.patch(
        f"/api/v1/endpoints/{ep['id']}",
        json={"url": "https://b.test/h", "events": ["contact.deleted"], "description": "CRM sync"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["url"], r.json()["events"], r.json()["description"]) == (
        "https://b.test/h",
        ["contact.deleted"],
        "CRM sync",
    )
    assert (
        await client.patch(f"/api/v1/endpoints/{ep['id']}", json={"url": "gopher://x"})
    ).status_code == 422
    assert (await client.patch(f"/api/v1/endpoints/{ep['id']}", json={})).status_code == 422
    r = await client.patch(f"/api/v1/endpoints/{ep['id']}", json={"enabled": False})
    assert r.json()["enabled"] is False and r.json()["disabled_reason"] == "disabled by an admin"
    assert (await client.delete(f"/api/v1/endpoints/{ep['id']}")).status_code == 204
    assert (await client.get(f"/api/v1/endpoints/{ep['id']}")).status_code == 404


async def test_rotation_returns_a_new_secret_and_an_overlap(client: httpx.AsyncClient) -> None:
    ep = (await client.post("/api/v1/endpoints", json={"url": "https://a.test/h", "events": ["*"]})).json()
    assert ep["previous_secret_until"] is None
    r = await client.post(f"/api/v1/endpoints/{ep['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["secret"] != ep["secret"] and rotated["secret"].startswith("whsec_")
    assert rotated["previous_secret_until"] is not None

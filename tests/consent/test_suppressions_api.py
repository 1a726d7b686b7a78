"""`/api/v1/suppressions`: search, add (agents), lift (admins), and the page."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import insert

from server.db import utcnow
from server.messages.models import Suppression
from tests.conftest import ClientFactory
from tests.consent.support import workspace_id
from tests.ui.conftest import BrowserFactory


async def _bounce(app: Any, workspace: int, address: str) -> None:
    async with app.state.services.db.transaction() as s:
        await s.execute(
            insert(Suppression).values(
                workspace_id=workspace, address=address, reason="bounce", created_at=utcnow()
            )
        )


async def test_agents_add_and_everyone_searches(
    make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    agent = await make_client("agent")
    viewer = await make_client("viewer")
    r = await agent.post(
        "/api/v1/suppressions", json={"address": " Ada@Example.TEST ", "note": "asked by phone"}
    )
    assert r.status_code == 201, r.text
    assert (r.json()["address"], r.json()["reason"], r.json()["note"]) == (
        "ada@example.test",
        "manual",
        "asked by phone",
    )
    phone = await agent.post("/api/v1/suppressions", json={"address": "+1 415 555 2671"})
    assert phone.status_code == 201 and phone.json()["address"] == "+14155552671"
    dup = await agent.post("/api/v1/suppressions", json={"address": "ada@example.test"})
    assert dup.status_code == 409
    assert (await viewer.post("/api/v1/suppressions", json={"address": "x@example.test"})).status_code == 403
    bad = await agent.post("/api/v1/suppressions", json={"address": "not an address"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "address"
    assert (
        await agent.post("/api/v1/suppressions", json={"address": "a@b.test", "reason": "bounce"})
    ).status_code == 422

    found = (await viewer.get("/api/v1/suppressions", params={"q": "EXAMPLE"})).json()
    assert [i["address"] for i in found["items"]] == ["ada@example.test"]
    assert (await viewer.get("/api/v1/suppressions", params={"reason": "bounce"})).json()["items"] == []
    everything = (await viewer.get("/api/v1/suppressions")).json()["items"]
    assert [i["address"] for i in everything] == ["+14155552671", "ada@example.test"]  # newest first


async def test_search_is_cursor_paginated(app: Any, client: httpx.AsyncClient) -> None:
    ws = await workspace_id(client)
    for i in range(5):
        await _bounce(app, ws, f"b{i}@example.test")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "reason": "bounce"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/suppressions", params=params)).json()
        seen += [i["address"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"b{i}@example.test" for i in reversed(range(5))]


async def test_only_admins_lift_and_a_lift_is_gone_for_good(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    agent = await make_client("agent")
    await _bounce(app, await workspace_id(client), "mistake@example.test")
    [row] = (await client.get("/api/v1/suppressions")).json()["items"]
    assert (await agent.delete(f"/api/v1/suppressions/{row['id']}")).status_code == 403
    assert (await client.delete(f"/api/v1/suppressions/{row['id']}")).status_code == 204
    assert (await client.get("/api/v1/suppressions")).json()["items"] == []
    assert (await client.delete(f"/api/v1/suppressions/{row['id']}")).status_code == 404


async def test_suppressions_belong_to_one_workspace(
    make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    r = await client.post("/api/v1/suppressions", json={"address": "ada@example.test"})
    stranger = await make_client("admin", workspace="Other")
    assert (await stranger.get("/api/v1/suppressions")).json()["items"] == []
    assert (await stranger.delete(f"/api/v1/suppressions/{r.json()['id']}")).status_code == 404
    # the same address may be suppressed in another workspace on its own
    assert (
        await stranger.post("/api/v1/suppressions", json={"address": "ada@example.test"})
    ).status_code == 201


async def test_the_page_lists_searches_and_offers_lifting_to_admins(
    app: Any, browser_client: BrowserFactory, client: httpx.AsyncClient
) -> None:
    await _bounce(app, await workspace_id(client), "bounced@example.test")
    admin = await browser_client("admin")
    page = await admin.get("/suppressions", params={"q": "bounced"})
    assert page.status_code == 200
    assert "bounced@example.test" in page.text and 'data-api-method="DELETE"' in page.text
    assert "bounced@example.test" not in (await admin.get("/suppressions", params={"q": "nobody"})).text
    viewer = await browser_client("viewer")
    seen = await viewer.get("/suppressions")
    assert "bounced@example.test" in seen.text and 'data-api-method="DELETE"' not in seen.text

"""`/api/v1/contacts/{id}/consent`: current state, the ledger, agents recording consent, events."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ClientFactory
from tests.consent.support import ledger_rows, new_contact


async def _events(client: httpx.AsyncClient, topics: str) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/events", params={"topics": topics, "after": 0, "timeout": 0})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["type"] == "consent.changed"]


async def test_an_agent_records_consent_given_by_phone_with_a_note(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    agent = await make_client("agent")
    contact = await new_contact(client)
    url = f"/api/v1/contacts/{contact['id']}/consent"
    assert (await agent.get(url)).json() == {"items": [], "next_cursor": None}

    r = await agent.post(url, json={"channel": "sms", "state": "opted_in", "note": "by phone, 3 Dec"})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "opted_in" and r.json()["source"] == "agent"
    r = await agent.post(url, json={"channel": "sms", "state": "opted_out"})
    assert r.status_code == 201

    [now] = (await agent.get(url)).json()["items"]
    assert (now["channel"], now["scope"], now["state"], now["source"]) == ("sms", "all", "opted_out", "agent")
    ledger = (await agent.get(url, params={"history": "true"})).json()["items"]
    assert [(e["state"], e["note"]) for e in ledger] == [("opted_out", None), ("opted_in", "by phone, 3 Dec")]
    me = (await agent.get("/api/v1/me")).json()
    assert {e["actor_id"] for e in ledger} == {me["id"]}


async def test_recording_the_state_a_contact_already_has_writes_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    contact = await new_contact(client)
    url = f"/api/v1/contacts/{contact['id']}/consent"
    assert (await client.post(url, json={"channel": "email", "state": "opted_out"})).status_code == 201
    again = await client.post(url, json={"channel": "email", "state": "opted_out"})
    assert again.status_code == 200
    assert await ledger_rows(app.state.services.db) == 1


async def test_consent_changed_reaches_the_contact_and_contacts_topics(client: httpx.AsyncClient) -> None:
    contact = await new_contact(client)
    other = await new_contact(client, email="bob@example.test", name="Bob")
    await client.post(
        f"/api/v1/contacts/{contact['id']}/consent", json={"channel": "email", "state": "opted_out"}
    )

    for topics in (f"contact:{contact['id']}", "contacts"):
        [event] = await _events(client, topics)
        assert event["data"] == {
            "contact_id": contact["id"],
            "channel": "email",
            "scope": "all",
            "state": "opted_out",
            "source": "agent",
            "by": (await client.get("/api/v1/me")).json()["id"],
        }
    assert await _events(client, f"contact:{other['id']}") == []
    assert await _events(client, "board") == []


async def test_viewers_read_consent_but_cannot_record_it(
    make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    viewer = await make_client("viewer")
    contact = await new_contact(client)
    url = f"/api/v1/contacts/{contact['id']}/consent"
    assert (await viewer.get(url)).status_code == 200
    r = await viewer.post(url, json={"channel": "email", "state": "opted_out"})
    assert r.status_code == 403


async def test_consent_of_another_workspaces_contact_is_404(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    contact = await new_contact(client)
    stranger = await make_client("admin", workspace="Other")
    url = f"/api/v1/contacts/{contact['id']}/consent"
    assert (await stranger.get(url)).status_code == 404
    assert (await stranger.post(url, json={"channel": "email", "state": "opted_out"})).status_code == 404
    assert await ledger_rows(app.state.services.db) == 0


async def test_a_bad_consent_body_is_422(client: httpx.AsyncClient) -> None:
    contact = await new_contact(client)
    url = f"/api/v1/contacts/{contact['id']}/consent"
    r = await client.post(url, json={"channel": "fax", "state": "maybe"})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"channel", "state"}


async def test_openapi_documents_consent_and_suppressions(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/contacts/{contact_id}/consent"])
    assert {"get", "post"} <= set(paths["/api/v1/suppressions"])
    assert "delete" in paths["/api/v1/suppressions/{suppression_id}"]

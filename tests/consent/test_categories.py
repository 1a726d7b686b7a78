"""Categories on templates, messages and campaigns; the unsubscribe link a marketing email needs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from server.consent import tokens
from tests.consent.conftest import PUBLIC_URL
from tests.consent.support import new_contact

MARKETING_BODY = "News for {{ name }}. Unsubscribe: {{ unsubscribe_url }}"


async def test_defaults_transactional_messages_and_templates_marketing_campaigns(
    client: httpx.AsyncClient,
) -> None:
    contact = await new_contact(client, tags=["vip"])
    t = await client.post(
        "/api/v1/templates", json={"name": "Receipt", "channel": "email", "subject": "R", "body": "Thanks"}
    )
    assert t.status_code == 201 and t.json()["category"] == "transactional"
    m = await client.post(
        "/api/v1/messages",
        json={"contact_id": contact["id"], "channel": "email", "subject": "s", "body": "b"},
    )
    assert m.status_code == 202 and m.json()["category"] == "transactional"
    c = await client.post(
        "/api/v1/campaigns",
        json={"name": "Spring", "template_id": t.json()["id"], "audience": {"tag": "vip"}},
    )
    assert c.status_code == 202 and c.json()["category"] == "marketing"
    async with asyncio.timeout(30):
        while not (
            items := (await client.get(f"/api/v1/messages?campaign_id={c.json()['id']}")).json()["items"]
        ):
            await asyncio.sleep(0.05)
    assert [i["category"] for i in items] == ["marketing"]
    got = (await client.get(f"/api/v1/messages/{m.json()['id']}")).json()
    assert got["category"] == "transactional"


async def test_a_marketing_email_template_without_unsubscribe_url_is_refused_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "name": "News",
        "channel": "email",
        "subject": "News",
        "body": "Hello {{ name }}",
        "category": "marketing",
    }
    r = await client.post("/api/v1/templates", json=body)
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["field"] == "body" and "{{ unsubscribe_url }}" in error["message"]

    ok = await client.post("/api/v1/templates", json=body | {"body": MARKETING_BODY})
    assert ok.status_code == 201 and ok.json()["category"] == "marketing"
    # ...and it stays required: the link cannot be edited out
    r = await client.patch(f"/api/v1/templates/{ok.json()['id']}", json={"body": "Hello again"})
    assert r.status_code == 422
    # a transactional email, or marketing by SMS, does not need it
    t = await client.post("/api/v1/templates", json=body | {"name": "T", "category": "transactional"})
    assert t.status_code == 201
    r = await client.patch(f"/api/v1/templates/{t.json()['id']}", json={"category": "marketing"})
    assert r.status_code == 422
    sms = await client.post("/api/v1/templates", json=body | {"name": "S", "channel": "sms"})
    assert sms.status_code == 201


async def test_unsubscribe_url_renders_the_recipients_working_link(
    app: Any, client: httpx.AsyncClient
) -> None:
    contact = await new_contact(client)
    t = await client.post(
        "/api/v1/templates",
        json={
            "name": "News",
            "channel": "email",
            "subject": "N",
            "body": MARKETING_BODY,
            "category": "marketing",
        },
    )
    m = await client.post(
        "/api/v1/messages",
        json={
            "contact_id": contact["id"],
            "channel": "email",
            "template_id": t.json()["id"],
            "category": "marketing",
        },
    )
    assert m.status_code == 202, m.text
    link = m.json()["body"].rpartition("Unsubscribe: ")[2]
    assert link.startswith(f"{PUBLIC_URL}/u/")
    asked = tokens.verify([app.state.services.settings.secret_key], link.rpartition("/u/")[2])
    assert asked is not None and (asked.contact_id, asked.channel, asked.scope) == (
        contact["id"],
        "email",
        "all",
    )
    preview = await client.post(
        f"/api/v1/templates/{t.json()['id']}/preview", json={"contact_id": contact["id"]}
    )
    assert preview.status_code == 200 and f"{PUBLIC_URL}/u/" in preview.json()["body"]


async def test_openapi_shows_the_category_fields(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/api/v1/openapi.json")).json()["components"]["schemas"]
    for name in ("MessageIn", "TemplateIn", "CampaignIn", "MessageOut", "TemplateOut", "CampaignOut"):
        assert "category" in schemas[name]["properties"], name

"""The contact page shows consent per channel, refreshed live, with a form for agents."""

from __future__ import annotations

from typing import Any

import httpx

from tests.consent.support import new_contact
from tests.ui.conftest import BrowserFactory


async def test_contact_page_shows_consent_per_channel_and_the_form_to_agents(
    app: Any, browser_client: BrowserFactory, client: httpx.AsyncClient
) -> None:
    contact = await new_contact(client)
    await client.post(
        f"/api/v1/contacts/{contact['id']}/consent", json={"channel": "sms", "state": "opted_out"}
    )
    agent = await browser_client("agent")
    page = await agent.get(f"/contacts/{contact['id']}")
    assert page.status_code == 200
    assert 'hx-trigger="consent-changed from:body"' in page.text
    assert f'data-api-url="/api/v1/contacts/{contact["id"]}/consent"' in page.text
    fragment = (await agent.get(f"/contacts/{contact['id']}/consent")).text
    assert '<tr data-channel="sms">' in fragment
    sms_row = fragment.split('<tr data-channel="sms">')[1].split("</tr>")[0]
    assert "opted out" in sms_row and "agent" in sms_row
    email_row = fragment.split('<tr data-channel="email">')[1].split("</tr>")[0]
    assert "no decision" in email_row
    viewer = await browser_client("viewer")
    assert "consent-form" not in (await viewer.get(f"/contacts/{contact['id']}")).text

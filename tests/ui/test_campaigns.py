"""The campaigns page: a search on the contacts list becomes a campaign's audience ("Send a
campaign to all N matching"), the page's form posts what `POST /api/v1/campaigns` takes, the list
shows each campaign's progress (read again while one expands) and cancels through the API."""

from __future__ import annotations

import html
import re
from typing import Any

from sqlalchemy import select

from server.audit.models import AuditEntry
from server.messages import campaigns
from server.messages.models import Message
from server.workspaces.models import Workspace
from tests.ui.conftest import BrowserFactory


def _form_body(page: str, values: dict[str, Any]) -> dict[str, Any]:
    """What static/forms.js posts for the page's new-campaign form: each named field's value (the
    page's own, unless `values` fills it), dotted names nested, empty fields left out."""
    form = page[page.index('data-api-url="/api/v1/campaigns"') :]
    form = form[: form.index("</form>")]
    body: dict[str, Any] = {}
    for tag in re.finditer(r"<(input|select)\b([^>]*)>", form):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(2)))
        name = attrs["name"]
        value = values.get(name, html.unescape(attrs.get("value", "")))
        if tag.group(1) == "select" and name not in values:
            first = re.search(r'<option(?: value="([^"]*)")?>([^<]*)</option>', form[tag.end() :])
            assert first is not None, name
            value = html.unescape(first.group(1) if first.group(1) is not None else first.group(2))
        if value == "":
            continue
        if attrs.get("data-type") == "int":
            value = int(value)
        node = body
        *path, last = name.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return body


async def test_a_search_becomes_a_campaign_whose_progress_the_page_shows(
    app: Any, browser_client: BrowserFactory
) -> None:
    agent = await browser_client("agent")
    for name, email in (("Ada One", "ada1@x.test"), ("Ada Two", "ada2@x.test"), ("Bob", "bob@x.test")):
        assert (await agent.post("/api/v1/contacts", json={"name": name, "email": email})).status_code == 201
    r = await agent.post(
        "/api/v1/templates",
        json={"name": "Spring news", "channel": "email", "subject": "Hi", "body": "Hello {{ name }}"},
    )
    assert r.status_code == 201, r.text
    template_id = r.json()["id"]

    listed = await agent.get("/contacts?q=ada")
    assert (
        'href="/campaigns?q=ada&amp;tag=#new-campaign">Send a campaign to all 2 matching</a>' in listed.text
    )
    page = await agent.get("/campaigns?q=ada&tag=")
    assert page.status_code == 200
    assert "2 contacts match this audience now" in page.text
    assert f'<option value="{template_id}">Spring news (email)</option>' in page.text
    body = _form_body(page.text, {"name": "Spring"})
    assert body == {
        "name": "Spring",
        "template_id": template_id,
        "audience": {"q": "ada"},
        "category": "marketing",
    }
    r = await agent.post("/api/v1/campaigns", json=body)
    assert r.status_code == 202, r.text
    campaign_id = r.json()["id"]
    await app.state.services.campaigns.wait()

    async with app.state.services.db.transaction() as s:
        to = sorted(
            email
            for (email,) in await s.execute(
                select(Message.to_address).where(Message.campaign_id == campaign_id)
            )
        )
        audited = [a for (a,) in await s.execute(select(AuditEntry.action))]
    assert to == ["ada1@x.test", "ada2@x.test"]
    assert "campaign.started" in audited
    page = await agent.get("/campaigns")
    row = page.text[page.text.index(f'data-campaign-id="{campaign_id}"') :]
    row = row[: row.index("</tr>")]
    assert "Spring" in row and f'<a href="/templates/{template_id}">Spring news</a>' in row
    assert "search “ada”" in row and '<td class="status">done</td>' in row and "2 / 2" in row
    assert f'data-api-url="/api/v1/campaigns/{campaign_id}/cancel"' in row
    assert 'hx-trigger="every' not in page.text  # nothing expanding: no polling

    assert (await agent.post(f"/api/v1/campaigns/{campaign_id}/cancel")).status_code == 202
    await app.state.services.campaigns.wait()
    row = (await agent.get("/campaigns/rows")).text
    assert '<td class="status">canceled</td>' in row and "/cancel" not in row


async def test_an_expanding_campaign_is_polled_and_viewers_only_read(
    app: Any, browser_client: BrowserFactory
) -> None:
    agent = await browser_client("agent")
    viewer = await browser_client("viewer")
    assert (
        await agent.post("/api/v1/contacts", json={"name": "Ada", "email": "ada@x.test"})
    ).status_code == 201
    r = await agent.post(
        "/api/v1/templates", json={"name": "T", "channel": "email", "subject": "S", "body": "B"}
    )
    template_id = r.json()["id"]
    services = app.state.services
    async with services.db.transaction() as s:
        workspace_id = (await s.execute(select(Workspace.id).where(Workspace.name == "Acme"))).scalar_one()
        c = await campaigns.create_campaign(
            s,
            workspace_id=workspace_id,
            user_id=None,
            data={"name": "Slow", "template_id": template_id, "audience": {"q": "ada"}},
        )
    rows = (await viewer.get("/campaigns/rows")).text
    assert 'hx-get="/campaigns/rows?cursor=" hx-trigger="every 3s"' in rows
    assert '<td class="status">expanding</td>' in rows and "0 / 1" in rows
    assert "/cancel" not in rows  # a viewer cannot cancel
    page = await viewer.get("/campaigns")
    assert page.status_code == 200 and "New campaign" not in page.text
    assert "Send a campaign" not in (await viewer.get("/contacts?q=ada")).text

    assert await campaigns.expand_campaign(services, c.id) == 1
    rows = (await agent.get("/campaigns/rows")).text
    assert 'hx-trigger="every' not in rows and '<td class="status">done</td>' in rows and "1 / 1" in rows
    assert f'data-api-url="/api/v1/campaigns/{c.id}/cancel"' in rows

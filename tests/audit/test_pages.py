"""The identity pages: API keys (the secret shown once), the audit log with filters, your sessions."""

from __future__ import annotations

import re

from tests.ui.conftest import BrowserFactory, csrf_field


async def test_the_api_keys_page_makes_a_key_shows_it_once_and_revokes_it(
    browser_client: BrowserFactory,
) -> None:
    c = await browser_client("admin")
    page = await c.get("/api-keys")
    assert page.status_code == 200 and "No API keys yet." in page.text
    r = await c.post(
        "/api-keys",
        data={
            "csrf_token": csrf_field(page.text),
            "name": "<b>crm</b>",
            "scopes": ["contacts:read", "events:read"],
        },
    )
    assert r.status_code == 201, r.text
    secret = re.search(r'id="new-key-secret">(sb_live_[^<]+)<', r.text)
    assert secret is not None and "<b>crm</b>" not in r.text  # escaped
    again = await c.get("/api-keys")
    assert secret.group(1) not in again.text and "contacts:read, events:read" in again.text
    key_id = (await c.get("/api/v1/api-keys")).json()["items"][0]["id"]
    r = await c.post(f"/api-keys/{key_id}/revoke", data={"csrf_token": csrf_field(again.text)})
    assert r.status_code == 303
    assert "revoked" in (await c.get("/api-keys")).text
    bad = await c.post("/api-keys", data={"csrf_token": csrf_field(again.text), "name": "x"})
    assert bad.status_code == 422 and "scopes" in bad.text
    agent = await browser_client("agent")
    assert (await agent.get("/api-keys")).status_code == 403


async def test_the_audit_page_lists_and_filters(browser_client: BrowserFactory) -> None:
    c = await browser_client("admin")
    r = await c.get("/audit")
    assert r.status_code == 200 and "auth.login" in r.text
    r = await c.get("/audit", params={"action": "provider"})
    assert (
        r.status_code == 200 and "auth.login" not in r.text and "Nothing recorded for these filters" in r.text
    )
    assert (await c.get("/audit", params={"actor": "robot"})).status_code == 422
    agent = await browser_client("agent")
    assert (await agent.get("/audit")).status_code == 403


async def test_the_sessions_page_lists_and_signs_out_everywhere(browser_client: BrowserFactory) -> None:
    c = await browser_client("viewer")
    page = await c.get("/sessions", headers={"user-agent": "ignored"})
    assert page.status_code == 200 and "(this one)" in page.text
    r = await c.post("/sessions/revoke-all", data={"csrf_token": csrf_field(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    c.cookies.delete("sb_access")
    r = await c.get("/sessions")
    assert r.status_code in (302, 303, 307) and "/login" in r.headers["location"]


async def test_the_sessions_page_signs_out_one_session(app: object, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    page = await c.get("/sessions")
    own = re.search(r'name="session_id" value="([0-9a-f]+)"', page.text)
    assert own is not None
    r = await c.post("/sessions/revoke", data={"csrf_token": csrf_field(page.text), "session_id": "nope"})
    assert r.status_code == 404
    r = await c.post(
        "/sessions/revoke", data={"csrf_token": csrf_field(page.text), "session_id": own.group(1)}
    )
    assert r.status_code == 303 and r.headers["location"] == "/login"

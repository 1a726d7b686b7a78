"""`GET/PUT /api/v1/sso`, and password sign-in turned off for a workspace that signs in through SSO."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import PASSWORD, ClientFactory
from tests.sso.conftest import APP_URL, CLIENT_SECRET, IdP, configure, sso_settings
from tests.ui.conftest import csrf_field


async def test_settings_are_saved_and_the_secret_is_never_returned(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    admin = await make_client("admin")
    assert (await admin.get("/api/v1/sso")).status_code == 404
    saved = await configure(admin, idp)
    assert CLIENT_SECRET not in str(saved)
    assert saved["client_secret_set"] is True
    assert saved["redirect_uri"] == APP_URL + "/sso/callback"
    assert saved["workspace_slug"] == "acme"
    assert saved["login_url"] == APP_URL + "/sso/acme/login"
    # A PUT without the secret keeps the stored one.
    body = sso_settings(idp, display_name="Acme SSO")
    del body["client_secret"]
    r = await admin.put("/api/v1/sso", json=body)
    assert r.status_code == 200, r.text
    got = await admin.get("/api/v1/sso")
    assert got.json()["display_name"] == "Acme SSO"
    assert CLIENT_SECRET not in got.text


async def test_only_admins_see_and_change_the_settings(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    agent = await make_client("agent")
    assert (await agent.get("/api/v1/sso")).status_code == 403
    assert (await agent.put("/api/v1/sso", json=sso_settings(idp))).status_code == 403


async def test_the_issuer_is_checked(app: Any, idp: IdP, make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    for issuer, why in [
        ("http://idp.example.com", "https://"),
        ("ftp://127.0.0.1", "https://"),
        (idp.issuer + "/nowhere", "discovery document"),
        ("http://127.0.0.1:1", "cannot fetch"),
    ]:
        r = await admin.put("/api/v1/sso", json=sso_settings(idp, issuer=issuer))
        assert r.status_code == 422, (issuer, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == "issuer"
        assert why in r.json()["errors"][0]["message"], r.text
    r = await admin.put("/api/v1/sso", json=sso_settings(idp, allowed_domains=["not a domain"]))
    assert r.status_code == 422
    body = sso_settings(idp)
    del body["client_secret"]
    r = await admin.put("/api/v1/sso", json=body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "client_secret"


async def test_a_loopback_issuer_needs_private_addresses_allowed(idp: IdP, db_url: str) -> None:
    from server.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(db_url, allow_private_endpoints=False))
    async with app.router.lifespan_context(app):
        from server.auth import service as auth_service
        from server.auth.models import Role

        async with app.state.services.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            await auth_service.create_user(
                s, workspace_id=ws.id, email="root@acme.test", password=PASSWORD, role=Role.admin
            )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL) as c:
            r = await c.post("/api/v1/auth/login", json={"email": "root@acme.test", "password": PASSWORD})
            c.headers["Authorization"] = "Bearer " + r.json()["access_token"]
            r = await c.put("/api/v1/sso", json=sso_settings(idp))
            assert r.status_code == 422
            assert "https://" in r.json()["errors"][0]["message"]


async def test_password_sign_in_is_refused_when_the_workspace_turned_it_off(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    admin = await make_client("admin")
    agent_email = "agent-pw@acme.test"
    await make_client("agent", email=agent_email)
    await configure(admin, idp, password_login=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL) as c:
        r = await c.post("/api/v1/auth/login", json={"email": agent_email, "password": PASSWORD})
        assert r.status_code == 403
        assert "signs in with Acme ID only" in r.json()["detail"]
        page = await c.get("/login")
        r = await c.post(
            "/login", data={"email": agent_email, "password": PASSWORD, "csrf_token": csrf_field(page.text)}
        )
        assert r.status_code == 403
        assert "signs in with Acme ID only" in r.text
        assert "sb_access" not in c.cookies
        # A wrong password still says only that: nothing about the workspace.
        r = await c.post(
            "/login", data={"email": agent_email, "password": "wrong", "csrf_token": csrf_field(page.text)}
        )
        assert r.status_code == 401 and "Acme ID" not in r.text
        # The login page for the workspace offers only the provider.
        page = await c.get("/login", params={"workspace": "acme"})
        assert "Sign in with Acme ID" in page.text
        assert 'href="/sso/acme/login"' in page.text
        assert 'name="password"' not in page.text


async def test_the_login_page_offers_sso_for_a_workspace_slug(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    await configure(await make_client("admin"), idp)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL) as c:
        page = await c.get("/login", params={"workspace": "ACME", "next": "/contacts"})
        assert "Sign in with Acme ID" in page.text
        assert "/sso/acme/login?next=%2Fcontacts" in page.text
        assert 'name="password"' in page.text  # password sign-in is still allowed here
        unknown = await c.get("/login", params={"workspace": "nope"})
        assert "No single sign-on is set up for “nope”" in unknown.text
        plain = await c.get("/login")
        assert "Sign in with" not in plain.text and 'name="workspace"' in plain.text
        assert (await c.get("/sso/nope/login")).status_code == 404

"""The login page's "Continue with SSO": an email's domain finds the one workspace whose single
sign-on allows it, and the sign-in goes on at its provider (the real one, with the email as
`login_hint`); an unknown domain, a domain two workspaces claim and too many lookups are refused
with a readable page."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from server.app import create_app
from tests.conftest import ClientFactory, make_settings
from tests.sso.conftest import APP_URL, Dance, IdP, configure
from tests.ui.conftest import csrf_field


async def continue_with_sso(client: httpx.AsyncClient, email: str, next_url: str = "/") -> httpx.Response:
    page = await client.get("/login")
    assert "Continue with SSO" in page.text
    data = {"email": email, "csrf_token": csrf_field(page.text), "next": next_url}
    return await client.post("/login/sso", data=data)


async def test_an_email_domain_leads_to_its_workspaces_provider_and_signs_in(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    r = await continue_with_sso(dance.app, "Alice@ACME.test", next_url="/contacts")
    assert r.status_code == 303, r.text
    target = urlsplit(r.headers["location"])
    assert target.path == "/login"
    assert parse_qs(target.query) == {
        "workspace": ["acme"],
        "next": ["/contacts"],
        "login_hint": ["Alice@ACME.test"],
    }
    # The workspace's login page: "Sign in with Acme ID", the email passed on to the provider.
    page = await dance.app.get(r.headers["location"])
    link = re.search(r'<a class="button" href="([^"]+)">Sign in with Acme ID</a>', page.text)
    assert link, page.text
    start = html.unescape(link.group(1))
    assert urlsplit(start).path == "/sso/acme/login"
    assert parse_qs(urlsplit(start).query) == {"next": ["/contacts"], "login_hint": ["Alice@ACME.test"]}
    assert 'value="Alice@ACME.test"' in page.text  # and the password form, if allowed, has it too

    r = await dance.app.get(start)
    assert r.status_code == 302, r.text
    authorize = r.headers["location"]
    assert authorize.startswith(idp.issuer)
    assert parse_qs(urlsplit(authorize).query)["login_hint"] == ["Alice@ACME.test"]
    r = await dance.finish(await dance.at_provider(authorize, "alice"))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/contacts"
    assert "sb_access" in dance.app.cookies


async def test_an_unknown_domain_is_told_there_is_no_single_sign_on(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    await configure(await make_client("admin"), idp)
    # "other.test" has a workspace (with users) but no single sign-on: the same answer as a
    # domain nobody has, and nothing about any workspace.
    await make_client("admin", workspace="Other")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL) as c:
        for email in ("someone@example.org", "someone@other.test", "x@sub.acme.test"):
            r = await continue_with_sso(c, email)
            assert r.status_code == 404, r.text
            domain = email.split("@")[1]
            assert f"There is no single sign-on for {domain}." in r.text
            assert "Acme" not in r.text and "Other" not in r.text and "location" not in r.headers


async def test_a_domain_two_workspaces_claim_is_refused_not_chosen(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    await configure(await make_client("admin"), idp)
    await configure(await make_client("admin", workspace="Beta"), idp, display_name="Beta ID")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL) as c:
        r = await continue_with_sso(c, "alice@acme.test")
        assert r.status_code == 409, r.text
        assert "More than one workspace has set up single sign-on for acme.test" in r.text
        assert "Acme ID" not in r.text and "Beta" not in r.text
        # The short name still leads to each workspace's own sign-in.
        r = await c.get("/login", params={"workspace": "beta"})
        assert "Sign in with Beta ID" in r.text


async def test_a_malformed_email_or_a_missing_csrf_token_is_refused(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    await configure(await make_client("admin"), idp)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL) as c:
        for email in ("", "acme.test", "alice@", "alice@acme", "alice@acme.test\x00"):
            r = await continue_with_sso(c, email)
            assert r.status_code == 422, (email, r.text)
            assert "Enter your work email address" in r.text
        r = await c.post("/login/sso", data={"email": "alice@acme.test", "csrf_token": "forged"})
        assert r.status_code == 403
        assert "The form expired" in r.text


async def test_lookups_spend_the_addresses_sign_in_bucket(db_url: str) -> None:
    settings = make_settings(db_url, rate_limit_enabled=True, rate_limit_login_ip_burst=3)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=APP_URL) as c:
            codes = [(await continue_with_sso(c, f"u{i}@example{i}.org")).status_code for i in range(4)]
            assert codes == [404, 404, 404, 429]
            r = await continue_with_sso(c, "u@example.org")
            assert r.status_code == 429 and "Too many sign-in attempts from this address" in r.text
            # The same bucket as failed password sign-ins: they are refused now too.
            page = await c.get("/login")
            data = {"email": "a@b.test", "password": "x", "csrf_token": csrf_field(page.text)}
            assert (await c.post("/login", data=data)).status_code == 429
        other = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=other, base_url=APP_URL) as c:
            assert (await continue_with_sso(c, "u@example.org")).status_code == 404

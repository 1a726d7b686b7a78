from __future__ import annotations

from typing import Any

import httpx

from tests.ui.conftest import BrowserFactory, create_user, csrf_field, sign_in


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_login_sets_session_cookies_and_lands_on_the_board(app: Any) -> None:
    email = await create_user(app, "agent", "Acme", name="Ann Agent")
    async with _client(app) as c:
        r = await sign_in(c, email)
        assert r.status_code == 303
        assert r.headers["location"] == "/"
        assert {"sb_access", "sb_refresh", "sb_csrf"} <= set(c.cookies.keys())
        board = await c.get("/")
        assert board.status_code == 200
        assert "Delivery board" in board.text
        assert "Ann Agent" in board.text


async def test_wrong_password_shows_the_form_again(app: Any) -> None:
    email = await create_user(app, "agent", "Acme")
    async with _client(app) as c:
        page = await c.get("/login")
        r = await c.post(
            "/login", data={"email": email, "password": "nope", "csrf_token": csrf_field(page.text)}
        )
        assert r.status_code == 401
        assert "The email or password is not right." in r.text
        assert "sb_access" not in c.cookies


async def test_login_without_csrf_token_is_refused(app: Any) -> None:
    email = await create_user(app, "agent", "Acme")
    async with _client(app) as c:
        await c.get("/login")
        from tests.conftest import PASSWORD

        r = await c.post("/login", data={"email": email, "password": PASSWORD})
        assert r.status_code == 403
        assert "sb_access" not in c.cookies


async def test_pages_without_a_session_redirect_to_login(app: Any) -> None:
    async with _client(app) as c:
        for path in ("/", "/contacts", "/templates", "/reports", "/contacts/1"):
            r = await c.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next="), path
        r = await c.get("/board/stream", headers={"HX-Request": "true"})
        assert r.headers["HX-Redirect"].startswith("/login")


async def test_expired_session_returns_to_login(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    # An access token that no longer verifies, and no refresh token: back to the login page.
    c.cookies.set("sb_access", "expired.token.value", domain="testserver.local")
    c.cookies.delete("sb_refresh")
    r = await c.get("/contacts?q=x")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/contacts%3Fq%3Dx"


async def test_expired_access_token_is_renewed_with_the_refresh_cookie(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    old_refresh = c.cookies["sb_refresh"]
    c.cookies.set("sb_access", "expired.token.value", domain="testserver.local")
    r = await c.get("/contacts")
    assert r.status_code == 200
    assert c.cookies["sb_refresh"] != old_refresh
    assert c.cookies["sb_access"] != "expired.token.value"


async def test_logout_needs_the_csrf_token_and_ends_the_session(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    del c.headers["X-CSRF-Token"]
    r = await c.post("/logout", data={})
    assert r.status_code == 403
    assert (await c.get("/")).status_code == 200
    board = await c.get("/")
    r = await c.post("/logout", data={"csrf_token": csrf_field(board.text)})
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert "sb_access" not in c.cookies
    assert (await c.get("/")).status_code == 303


async def test_cookie_api_writes_without_csrf_header_are_refused(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    del c.headers["X-CSRF-Token"]
    r = await c.post("/api/v1/contacts", json={"name": "Eve"})
    assert r.status_code == 403
    r = await c.post("/api/v1/contacts", json={"name": "Eve"}, headers={"X-CSRF-Token": c.cookies["sb_csrf"]})
    assert r.status_code == 201


async def test_session_refresh_needs_csrf_and_a_live_refresh_cookie(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    assert (await c.post("/session/refresh", headers={"X-CSRF-Token": "wrong"})).status_code == 403
    r = await c.post("/session/refresh")
    assert r.status_code == 204
    c.headers["X-CSRF-Token"] = c.cookies["sb_csrf"]
    c.cookies.delete("sb_refresh")
    assert (await c.post("/session/refresh")).status_code == 401


async def test_login_next_is_only_a_local_path(app: Any) -> None:
    email = await create_user(app, "agent", "Acme")
    async with _client(app) as c:
        page = await c.get("/login?next=//evil.example/x")
        assert 'name="next" value="/"' in page.text
        from tests.conftest import PASSWORD

        r = await c.post(
            "/login",
            data={
                "email": email,
                "password": PASSWORD,
                "csrf_token": csrf_field(page.text),
                "next": "https://evil.example",
            },
        )
        assert r.headers["location"] == "/"


async def test_fragments_leave_renewal_to_the_page_script(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    refresh = c.cookies["sb_refresh"]
    c.cookies.set("sb_access", "expired.token.value", domain="testserver.local")
    r = await c.get("/board/stream", headers={"HX-Request": "true"})
    assert r.status_code == 401
    assert c.cookies["sb_refresh"] == refresh  # not spent: the script renews once for the page
    assert (await c.post("/session/refresh")).status_code == 204
    assert (await c.get("/board/stream", headers={"HX-Request": "true"})).status_code == 200


async def test_presence_post_needs_csrf_a_known_state_and_an_own_contact(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    other = await browser_client("agent", workspace="Other")
    contact = (await c.post("/api/v1/contacts", json={"name": "P"})).json()["id"]
    token = c.headers.pop("X-CSRF-Token")
    assert (await c.post(f"/contacts/{contact}/presence", data={"state": "viewing"})).status_code == 403
    ok = await c.post(f"/contacts/{contact}/presence", data={"state": "viewing", "csrf_token": token})
    assert ok.status_code == 204
    bad = await c.post(f"/contacts/{contact}/presence", data={"state": "dancing", "csrf_token": token})
    assert bad.status_code == 422
    theirs = await other.post(f"/contacts/{contact}/presence", data={"state": "viewing"})
    assert theirs.status_code == 404


async def test_login_form_is_rate_limited_like_the_api(db_url: str) -> None:
    from server.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(
        db_url, rate_limit_enabled=True, rate_limit_login_burst=3, rate_limit_login_per_s=0.001
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        email = await create_user(application, "agent", "Acme")
        async with _client(application) as c:
            page = await c.get("/login")
            token = csrf_field(page.text)
            codes = [
                (
                    await c.post("/login", data={"email": email, "password": "wrong", "csrf_token": token})
                ).status_code
                for _ in range(4)
            ]
            assert codes == [401, 401, 401, 429]
            from tests.conftest import PASSWORD

            r = await c.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
            assert r.status_code == 429
            assert "Too many" in r.text


async def test_login_form_failures_from_another_address_never_lock_the_owner_out(db_url: str) -> None:
    from server.app import create_app
    from tests.conftest import PASSWORD, make_settings

    settings = make_settings(
        db_url, rate_limit_enabled=True, rate_limit_login_burst=3, rate_limit_login_per_s=0.001
    )
    application = create_app(settings)

    def from_address(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=application, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async with application.router.lifespan_context(application):
        email = await create_user(application, "agent", "Acme")
        async with from_address("192.0.2.7") as attacker, from_address("198.51.100.9") as owner:
            token = csrf_field((await attacker.get("/login")).text)
            for i in range(6):
                await attacker.post("/login", data={"email": email, "password": f"x{i}", "csrf_token": token})
            token = csrf_field((await owner.get("/login")).text)
            r = await owner.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
            assert r.status_code == 303
            assert "sb_access" in owner.cookies

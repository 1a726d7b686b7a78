from __future__ import annotations

import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey

from server.auth.tokens import AccessClaims, TokenCodec
from tests.conftest import PASSWORD, ClientFactory


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_login_returns_pair_and_secure_cookies(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    me = (await admin.get("/api/v1/me")).json()
    anon = await make_client(None)
    r = await _login(anon, me["email"].upper())  # email match is case-insensitive
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0 and body["refresh_token"]
    cookies = r.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith("sb_access="))
    assert "HttpOnly" in access and "SameSite=lax" in access
    refresh = next(c for c in cookies if c.startswith("sb_refresh="))
    assert "HttpOnly" in refresh and "SameSite=strict" in refresh


async def test_unknown_user_and_wrong_password_get_the_same_answer(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    email = (await admin.get("/api/v1/me")).json()["email"]
    anon = await make_client(None)
    wrong = await _login(anon, email, "wrong password")
    unknown = await _login(anon, "nobody@acme.test", "wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_refresh_rotates_and_reuse_revokes_the_family(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    email = (await admin.get("/api/v1/me")).json()["email"]
    anon = await make_client(None)
    first = (await _login(anon, email)).json()["refresh_token"]
    anon.cookies.clear()

    r = await anon.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first
    # The new access token works.
    ok = await anon.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert ok.status_code == 200

    # Replaying the spent token fails, and revokes the whole family: the successor dies too.
    assert (await anon.post("/api/v1/auth/refresh", json={"refresh_token": first})).status_code == 401
    assert (await anon.post("/api/v1/auth/refresh", json={"refresh_token": second})).status_code == 401
    # A separate login (another family) is unaffected.
    third = (await _login(anon, email)).json()["refresh_token"]
    assert (await anon.post("/api/v1/auth/refresh", json={"refresh_token": third})).status_code == 200


async def test_logout_revokes_refresh_token(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    email = (await admin.get("/api/v1/me")).json()["email"]
    anon = await make_client(None)
    token = (await _login(anon, email)).json()["refresh_token"]
    anon.cookies.clear()
    r = await anon.post("/api/v1/auth/logout", json={"refresh_token": token})
    assert r.status_code == 204
    assert (await anon.post("/api/v1/auth/refresh", json={"refresh_token": token})).status_code == 401


async def test_bad_tokens_are_401(make_client: ClientFactory, app: Any) -> None:
    anon = await make_client(None)
    assert (await anon.get("/api/v1/me")).status_code == 401
    secret = app.state.services.settings.secret_key
    now = int(time.time())
    claims = {"sub": "1", "ws": 1, "role": "admin", "typ": "access", "iat": now, "exp": now + 600}
    expired = TokenCodec(secret, -10).issue(AccessClaims(1, 1, "admin"))
    wrong_key = jwt.encode(
        {"alg": "HS256"}, claims, OctKey.import_key(b"another-secret-key-of-enough-length")
    )
    import base64
    import json

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    alg_none = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    for token in (expired, wrong_key, alg_none, "garbage", ""):
        r = await anon.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.headers["content-type"] == "application/problem+json"


async def test_users_admin_only(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    agent = await make_client("agent")
    r = await admin.post(
        "/api/v1/users", json={"email": "new@acme.test", "password": "longenough", "role": "viewer"}
    )
    assert r.status_code == 201 and r.json()["role"] == "viewer"
    assert (
        await admin.post("/api/v1/users", json={"email": "NEW@acme.test", "password": "longenough"})
    ).status_code == 409
    assert (
        await agent.post("/api/v1/users", json={"email": "x@acme.test", "password": "longenough"})
    ).status_code == 403
    assert (await agent.get("/api/v1/users")).status_code == 403
    emails = [u["email"] for u in (await admin.get("/api/v1/users")).json()["items"]]
    assert "new@acme.test" in emails
    # New user can sign in with the given role.
    anon = await make_client(None)
    assert (await _login(anon, "new@acme.test", "longenough")).status_code == 200


async def test_cookie_auth_needs_csrf_token_on_writes(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    email = (await admin.get("/api/v1/me")).json()["email"]
    browser = await make_client(None)
    assert (await _login(browser, email)).status_code == 200
    assert (await browser.get("/api/v1/me")).status_code == 200  # cookie works for reads
    r = await browser.post("/api/v1/contacts", json={"name": "x"})
    assert r.status_code == 403
    csrf = browser.cookies["sb_csrf"]
    r = await browser.post("/api/v1/contacts", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201

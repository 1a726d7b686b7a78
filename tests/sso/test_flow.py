"""The OpenID Connect sign-in against a real provider, driven without a browser: what signs in,
as whom and with which role, and every way it must fail with a readable page."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from server.auth.models import User
from server.sso.models import SsoIdentity
from tests.conftest import ClientFactory
from tests.sso.conftest import Dance, IdP, configure


async def _user(app: Any, email: str) -> User | None:
    async with app.state.services.db.transaction() as s:
        return (await s.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def test_first_sign_in_provisions_the_user_with_the_mapped_role(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    r = await dance.sign_in("alice")
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/"
    assert {"sb_access", "sb_refresh", "sb_csrf"} <= set(dance.app.cookies.keys())
    user = await _user(app, "alice@acme.test")
    assert user is not None and user.role == "admin" and user.name == "Alice Admin"
    me = await dance.app.get("/")
    assert me.status_code == 200 and "Alice Admin" in me.text


async def test_the_role_follows_the_provider_at_each_sign_in(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    admin = await make_client("admin")
    await configure(admin, idp)
    assert (await dance.sign_in("alice")).status_code == 303
    idp.set_user("alice", groups=["staff"])
    assert (await dance.another().sign_in("alice")).status_code == 303
    assert (await _user(app, "alice@acme.test")).role == "agent"  # type: ignore[union-attr]
    idp.set_user("alice", groups=[])
    assert (await dance.another().sign_in("alice")).status_code == 303
    assert (await _user(app, "alice@acme.test")).role == "viewer"  # type: ignore[union-attr]
    # Without a default role, a user the mapping does not name is refused, and keeps no role they had.
    await configure(admin, idp, default_role=None)
    r = await dance.another().sign_in("alice")
    assert r.status_code == 403
    assert "has no role in this workspace" in r.text
    assert "sb_access" not in r.cookies


async def test_a_second_user_without_a_mapped_group_gets_the_default_role(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    assert (await dance.sign_in("vic")).status_code == 303
    assert (await _user(app, "vic@acme.test")).role == "viewer"  # type: ignore[union-attr]


async def test_the_second_sign_in_finds_the_user_by_provider_account(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    assert (await dance.sign_in("bob")).status_code == 303
    idp.set_user("bob", email="robert@acme.test")  # changed at the provider: still the same account
    assert (await dance.another().sign_in("bob")).status_code == 303
    async with app.state.services.db.transaction() as s:
        ids = list((await s.execute(select(SsoIdentity))).scalars())
    assert len(ids) == 1 and ids[0].subject == "bob"
    assert await _user(app, "robert@acme.test") is None


async def test_an_existing_password_user_is_linked_by_verified_email(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    await make_client("agent", email="bob@acme.test")
    r = await dance.sign_in("bob")
    assert r.status_code == 303
    async with app.state.services.db.transaction() as s:
        assert len(list((await s.execute(select(User).where(User.email == "bob@acme.test"))).scalars())) == 1


async def test_the_session_after_sso_renews_and_rotates_like_a_password_sign_in(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    assert (await dance.sign_in("bob")).status_code == 303
    old = dance.app.cookies["sb_refresh"]
    r = await dance.app.post("/session/refresh", headers={"X-CSRF-Token": dance.app.cookies["sb_csrf"]})
    assert r.status_code == 204
    assert dance.app.cookies["sb_refresh"] != old
    # The spent refresh token again: the whole sign-in is revoked.
    replay = await dance.app.post("/api/v1/auth/refresh", json={"refresh_token": old})
    assert replay.status_code == 401


async def _refused(r: httpx.Response, status: int, text: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert text in r.text
    assert "Traceback" not in r.text
    assert "sb_access" not in r.cookies


async def test_an_unverified_email_is_refused(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    await _refused(await dance.sign_in("carol"), 403, "is not verified at Acme ID")
    assert await _user(app, "carol@acme.test") is None


async def test_an_unverified_email_is_let_in_when_the_admin_says_so(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp, require_verified_email=False)
    assert (await dance.sign_in("carol")).status_code == 303


async def test_a_domain_not_allowed_is_refused(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    await _refused(await dance.sign_in("dave"), 403, "Accounts of other.test may not sign in")
    assert await _user(app, "dave@other.test") is None


async def test_a_deactivated_user_cannot_sign_in(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    assert (await dance.sign_in("bob")).status_code == 303
    async with app.state.services.db.transaction() as s:
        user = (await s.execute(select(User).where(User.email == "bob@acme.test"))).scalar_one()
        user.is_active = False
    await _refused(await dance.another().sign_in("bob"), 403, "deactivated")

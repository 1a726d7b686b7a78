"""What the callback refuses: ID tokens that do not verify (signature, nonce, audience, expiry),
a wrong `state`, a code used twice, a provider that is down; and key rotation at the provider."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.auth.models import User
from tests.conftest import ClientFactory
from tests.sso.conftest import Dance, IdP, configure


async def _refused(r: httpx.Response, status: int, text: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert text in r.text, r.text
    assert "Traceback" not in r.text
    assert "sb_access" not in r.cookies
    assert "sb_refresh" not in r.cookies


async def _users(app: Any) -> int:
    async with app.state.services.db.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(User))).scalar_one())


@pytest.mark.parametrize(
    ("mischief", "text"),
    [
        ("tamper", "does not verify"),
        ("wrong_nonce", "does not answer this sign-in (nonce)"),
        ("wrong_aud", "was issued to another application (audience)"),
        ("expired", "has expired"),
    ],
)
async def test_an_id_token_that_does_not_verify_is_refused(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance, mischief: str, text: str
) -> None:
    await configure(await make_client("admin"), idp)
    before = await _users(app)
    idp.mischief(mischief)
    await _refused(await dance.sign_in("alice"), 401, text)
    assert await _users(app) == before
    idp.mischief(None)  # the same provider, behaving: the sign-in works
    assert (await dance.another().sign_in("alice")).status_code == 303


async def test_a_wrong_state_is_refused(app: Any, idp: IdP, make_client: ClientFactory, dance: Dance) -> None:
    await configure(await make_client("admin"), idp)
    callback = await dance.at_provider(await dance.start(), "alice")
    forged = callback.replace("state=", "state=x")
    await _refused(await dance.finish(forged), 400, "does not match the one this browser started (state)")


async def test_a_callback_without_the_flow_cookie_is_refused(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    callback = await dance.at_provider(await dance.start(), "alice")
    dance.app.cookies.delete("sb_sso")
    await _refused(await dance.finish(callback), 400, "started in another browser")


async def test_a_replayed_code_is_refused(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    callback = await dance.at_provider(await dance.start(), "alice")
    flow_cookie = dance.app.cookies["sb_sso"]
    assert (await dance.finish(callback)).status_code == 303
    # Replayed with the flow's cookie as it was (an attacker who copied both): the provider refuses
    # the spent code, and our page says so.
    replay = dance.another()
    replay.app.cookies.set("sb_sso", flow_cookie, domain="testserver.local", path="/sso")
    await _refused(await replay.finish(callback), 400, "already used or has expired")
    # Replayed in the same browser: the flow's cookie was spent by the first callback.
    await _refused(await dance.finish(callback), 400, "please start again")


async def test_a_provider_that_is_down_answers_a_readable_502(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    idp.stop()
    r = await dance.app.get("/sso/acme/login")
    await _refused(r, 502, "Acme ID cannot be reached")


async def test_a_provider_that_goes_down_during_the_sign_in_answers_a_readable_502(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    callback = await dance.at_provider(await dance.start(), "alice")
    idp.stop()
    await _refused(await dance.finish(callback), 502, "Acme ID cannot be reached")


async def test_a_key_rotation_at_the_provider_refetches_its_keys(
    app: Any, idp: IdP, make_client: ClientFactory, dance: Dance
) -> None:
    await configure(await make_client("admin"), idp)
    assert (await dance.sign_in("alice")).status_code == 303
    old_kid = idp.kid()
    idp.restart()  # same issuer and port, a new signing key
    assert idp.kid() != old_kid
    r = await dance.another().sign_in("alice")
    assert r.status_code == 303, r.text

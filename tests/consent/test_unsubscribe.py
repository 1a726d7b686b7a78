"""`/u/{token}`: RFC 8058 one-click unsubscribe, and the page a GET shows."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.consent.conftest import OLD_SECRET
from tests.consent.support import ledger_rows, new_contact, token_for, workspace_id

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def target(app: Any, client: httpx.AsyncClient) -> tuple[str, int]:
    """(token, contact id) for a contact of the signed-in admin's workspace."""
    contact = await new_contact(client)
    secret = app.state.services.settings.secret_key
    return token_for(secret, await workspace_id(client), contact["id"]), contact["id"]


async def _consent(client: httpx.AsyncClient, contact_id: int) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/contacts/{contact_id}/consent")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_one_click_post_as_rfc_8058_describes_opts_out_once(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient, target: tuple[str, int]
) -> None:
    token, contact_id = target
    mail_client = await make_client(role=None)  # no login, no cookie, no CSRF token
    for _ in range(3):  # a mail client retrying, or a scanner replaying the POST
        r = await mail_client.post(
            f"/u/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200, r.text
        assert "location" not in r.headers
        assert "set-cookie" not in r.headers
    assert not mail_client.cookies
    assert await ledger_rows(app.state.services.db) == 1
    [state] = await _consent(client, contact_id)
    assert (state["channel"], state["scope"], state["state"], state["source"]) == (
        "email",
        "all",
        "opted_out",
        "list-unsubscribe-post",
    )
    history = (await client.get(f"/api/v1/contacts/{contact_id}/consent?history=true")).json()["items"]
    assert [h["state"] for h in history] == ["opted_out"]
    assert history[0]["actor_id"] is None and "token_issued" in history[0]["evidence"]


async def test_get_shows_a_confirm_page_and_changes_nothing(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient, target: tuple[str, int]
) -> None:
    token, contact_id = target
    browser = await make_client(role=None)
    for url in (f"/u/{token}", f"/u/{token}?keep=1"):
        r = await browser.get(url)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
    page = (await browser.get(f"/u/{token}")).text
    assert f'action="/u/{token}"' in page and 'name="confirm"' in page
    assert "Keep me subscribed" in page
    assert "still subscribed" in (await browser.get(f"/u/{token}?keep=1")).text
    assert await ledger_rows(app.state.services.db) == 0
    assert await _consent(client, contact_id) == []


async def test_the_pages_confirm_button_opts_out_as_a_link(
    make_client: ClientFactory, client: httpx.AsyncClient, target: tuple[str, int]
) -> None:
    token, contact_id = target
    browser = await make_client(role=None)
    r = await browser.post(f"/u/{token}", data={"confirm": "1"})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    [state] = await _consent(client, contact_id)
    assert (state["state"], state["source"]) == ("opted_out", "link")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-3] + ("xyz" if not t.endswith("xyz") else "abc"),  # signature changed
        lambda t: "garbled",
        lambda t: t.split(".")[0],  # no signature
        lambda t: t + "." + t,
    ],
)
async def test_a_forged_or_garbled_token_is_404_and_changes_nothing(
    app: Any, make_client: ClientFactory, target: tuple[str, int], mangle: Any
) -> None:
    bad = mangle(target[0])
    anyone = await make_client(role=None)
    r = await anyone.post(f"/u/{bad}", data=ONE_CLICK)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    page = await anyone.get(f"/u/{bad}")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert (await anyone.post(f"/u/{bad}", data={"confirm": "1"})).status_code == 404
    assert await ledger_rows(app.state.services.db) == 0


async def test_someone_elses_workspace_in_a_forged_token_is_404(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    contact = await new_contact(client)
    wrong_workspace = token_for(app.state.services.settings.secret_key, 999_999, contact["id"])
    anyone = await make_client(role=None)
    assert (await anyone.post(f"/u/{wrong_workspace}", data=ONE_CLICK)).status_code == 404
    assert await ledger_rows(app.state.services.db) == 0


async def test_a_token_signed_before_the_key_rotation_still_unsubscribes(
    app: Any, make_client: ClientFactory, client: httpx.AsyncClient
) -> None:
    contact = await new_contact(client)
    old = token_for(OLD_SECRET, await workspace_id(client), contact["id"])
    r = await (await make_client(role=None)).post(f"/u/{old}", data=ONE_CLICK)
    assert r.status_code == 200
    assert [s["state"] for s in await _consent(client, contact["id"])] == ["opted_out"]


async def test_a_post_without_the_one_click_body_is_refused(
    app: Any, make_client: ClientFactory, target: tuple[str, int]
) -> None:
    anyone = await make_client(role=None)
    r = await anyone.post(f"/u/{target[0]}", data={"List-Unsubscribe": "Yes please"})
    assert r.status_code == 400
    assert await ledger_rows(app.state.services.db) == 0

"""The dashboard in a real browser: sign-in, live board (WebSocket and long-polling), co-editing
with presence and conflicts, phone layout, and escaping."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from server.contacts.service import create_contact
from server.events.service import emit
from server.messages.models import Message
from server.providers.models import Provider
from server.templates.models import Template
from tests.browser.conftest import PHONE, LiveServer, screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

MG_KEY = "mailgun-signing-key-for-tests"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


async def _contact(server: LiveServer, name: str = "Ada Lovelace", **extra: Any) -> int:
    data: dict[str, Any] = {
        "name": name,
        "email": f"{uuid.uuid4().hex[:6]}@example.test",
        "phone": None,
        "attributes": {},
        "tags": [],
    }
    data.update(extra)
    async with server.db.transaction() as s:
        c = await create_contact(s, workspace_id=server.workspace_id, user_id=None, data=data)
        return c.id


async def _sent_message(server: LiveServer) -> tuple[int, int, str]:
    """A mailgun connection and a message it has sent: (provider id, message id, provider message id)."""
    pmid = f"{uuid.uuid4().hex}@sample.mailgun.test"
    async with server.db.transaction() as s:
        p = Provider(
            workspace_id=server.workspace_id,
            name="Mailgun",
            kind="mailgun",
            channel="email",
            config={"webhook_signing_key": MG_KEY},
            webhook_key="unused",
        )
        s.add(p)
        await s.flush()
        m = Message(
            workspace_id=server.workspace_id,
            channel="email",
            to_address="alice@example.test",
            status="sent",
            provider_id=p.id,
            provider_kind="mailgun",
            provider_message_id=pmid,
        )
        s.add(m)
        await s.flush()
        return p.id, m.id, pmid


async def _mailgun_delivered(server: LiveServer, provider_id: int, pmid: str) -> None:
    """Mailgun's documented webhook: HMAC-SHA256(signing key, timestamp + token)."""
    t = str(int(time.time()))
    token = uuid.uuid4().hex
    data = {
        "event": "delivered",
        "id": f"mg-{uuid.uuid4().hex}",
        "timestamp": time.time(),
        "recipient": "alice@example.test",
        "message": {"headers": {"message-id": pmid, "to": "alice@example.test"}},
    }
    body = {
        "signature": {
            "timestamp": t,
            "token": token,
            "signature": hmac.new(MG_KEY.encode(), (t + token).encode(), hashlib.sha256).hexdigest(),
        },
        "event-data": data,
    }
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            f"/webhooks/{provider_id}", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    assert r.status_code == 200, r.text


async def test_sign_in_lands_on_the_board(live_server: LiveServer, browser: Any) -> None:
    page = await sign_in(browser, live_server, await live_server.user("agent", name="Ann"))
    await expect(page.get_by_role("heading", name="Delivery board")).to_be_visible()
    await expect(page.locator(".who .user")).to_contain_text("Ann")
    await page.get_by_role("button", name="Sign out").click()
    # The sign-out's redirect, or the live socket closed at once by the revocation (4401) sending the
    # page to /login?next=/ first: either way the login page.
    await page.wait_for_url(lambda url: url.startswith(live_server.url + "/login"))
    await page.goto("/")
    await page.wait_for_url(live_server.url + "/login?next=/")


async def test_webhook_turns_the_chip_delivered_without_reload(live_server: LiveServer, browser: Any) -> None:
    page = await sign_in(browser, live_server, await live_server.user("agent"))
    provider_id, message_id, pmid = await _sent_message(live_server)
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-live", "ws")
    chip = page.locator(f"#msg-{message_id} .chip")
    await expect(chip).to_have_text("sent")
    await page.evaluate("window.__same_page = true")
    await _mailgun_delivered(live_server, provider_id, pmid)
    await expect(chip).to_have_text("delivered", timeout=10_000)
    await expect(page.locator('[data-count-status="delivered"]')).to_have_text("1", timeout=10_000)
    assert await page.evaluate("window.__same_page === true")
    await screenshot(page, "board-desktop")


async def test_board_long_polls_when_websockets_are_blocked(live_server: LiveServer, browser: Any) -> None:
    email = await live_server.user("agent")
    provider_id, message_id, pmid = await _sent_message(live_server)
    page = await sign_in(browser, live_server, email, ws_route=lambda ws: ws.close())
    await expect(page.locator("body")).to_have_attribute("data-live", "poll", timeout=10_000)
    chip = page.locator(f"#msg-{message_id} .chip")
    await expect(chip).to_have_text("sent")
    await _mailgun_delivered(live_server, provider_id, pmid)
    await expect(chip).to_have_text("delivered", timeout=10_000)
    # A new message appears once, at the top, while polling.
    async with live_server.db.transaction() as s:
        m = Message(workspace_id=live_server.workspace_id, channel="sms", to_address="+1", status="queued")
        s.add(m)
        await s.flush()
        data = {
            "message_id": m.id,
            "contact_id": None,
            "channel": "sms",
            "status": "queued",
            "provider": None,
            "reason": None,
        }
        await emit(s, live_server.workspace_id, "message.created", data)
    await expect(page.locator(f"#msg-{m.id} .chip")).to_have_text("queued", timeout=10_000)
    await expect(page.locator(f"#msg-{m.id}")).to_have_count(1)


async def test_board_fits_a_phone_screen(live_server: LiveServer, browser: Any) -> None:
    email = await live_server.user("agent", name="Phone User With A Long Name")
    await _sent_message(live_server)
    contact_id = await _contact(
        live_server, name="A very long contact name " * 4, attributes={"plan": "x" * 80}
    )
    page = await sign_in(browser, live_server, email, viewport=PHONE)
    for path in ("/", "/contacts", f"/contacts/{contact_id}", "/templates", "/reports"):
        await page.goto(path)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
    await page.goto("/")
    await screenshot(page, "board-phone")
    await page.goto(f"/contacts/{contact_id}")
    await screenshot(page, "contact-phone")


async def test_two_agents_co_edit_a_contact(live_server: LiveServer, browser: Any) -> None:
    a_email = await live_server.user("agent", name="Alice Agent")
    b_email = await live_server.user("agent", name="Bob Agent")
    contact_id = await _contact(live_server, name="Grace Hopper", attributes={"city": "Arlington"})
    a = await sign_in(browser, live_server, a_email)
    b = await sign_in(browser, live_server, b_email)
    await a.goto(f"/contacts/{contact_id}")
    await b.goto(f"/contacts/{contact_id}")

    # Presence: each sees the other.
    await expect(a.locator("#presence")).to_contain_text("Bob Agent", timeout=10_000)
    await expect(b.locator("#presence")).to_contain_text("Alice Agent", timeout=10_000)

    # B changes the name; A has not touched it, so A's field follows.
    await b.get_by_label("Name", exact=True).fill("Grace B. Hopper")
    await expect(a.locator("#presence")).to_contain_text("editing", timeout=10_000)
    await b.get_by_role("button", name="Save").click()
    await expect(b.locator("#save-state")).to_have_text("Saved.")
    await expect(a.get_by_label("Name", exact=True)).to_have_value("Grace B. Hopper", timeout=10_000)
    await expect(a.locator("#contact-title")).to_have_text("Grace B. Hopper")

    # Both edit the city: A's unsaved edit meets B's saved one; A sees both values and chooses.
    await a.get_by_label("city").fill("New York")
    await b.get_by_label("city").fill("Washington")
    await b.get_by_role("button", name="Save").click()
    await expect(b.locator("#save-state")).to_have_text("Saved.")
    conflict = a.locator(".conflict")
    await expect(conflict).to_be_visible(timeout=10_000)
    await expect(conflict.locator(".yours")).to_have_text("New York")
    await expect(conflict.locator(".theirs")).to_have_text("Washington")
    await screenshot(a, "contact-conflict-desktop")
    await conflict.get_by_role("button", name="Keep mine").click()
    await a.get_by_role("button", name="Save").click()
    await expect(a.locator("#save-state")).to_have_text("Saved.")
    await expect(b.get_by_label("city")).to_have_value("New York", timeout=10_000)
    await screenshot(a, "contact-desktop")


async def test_conflict_on_save_when_the_event_has_not_arrived(live_server: LiveServer, browser: Any) -> None:
    """The server's 409 shows the conflict too (say the other's event is still on its way)."""
    a = await sign_in(browser, live_server, await live_server.user("agent", name="Alice"))
    contact_id = await _contact(live_server, name="Alan Turing")
    await a.goto(f"/contacts/{contact_id}")
    await a.evaluate("window.SB.contact.stop()")  # no more events on this page
    other = await live_server.user("agent")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        token = (await c.post("/api/v1/auth/login", json={"email": other, "password": PASSWORD})).json()[
            "access_token"
        ]
        r = await c.patch(
            f"/api/v1/contacts/{contact_id}",
            json={"name": "Alan M. Turing"},
            headers={"Authorization": f"Bearer {token}", "If-Match": '"1"'},
        )
        assert r.status_code == 200
    await a.get_by_label("Name", exact=True).fill("A. Turing")
    await a.get_by_role("button", name="Save").click()
    conflict = a.locator(".conflict")
    await expect(conflict.locator(".theirs")).to_have_text("Alan M. Turing")
    await expect(conflict.locator(".yours")).to_have_text("A. Turing")
    await conflict.get_by_role("button", name="Use theirs").click()
    await expect(a.get_by_label("Name", exact=True)).to_have_value("Alan M. Turing")


async def test_xss_payloads_render_as_text(live_server: LiveServer, browser: Any) -> None:
    page = await sign_in(browser, live_server, await live_server.user("agent"))
    contact_id = await _contact(live_server, name=XSS, attributes={XSS: XSS}, tags=[XSS])
    async with live_server.db.transaction() as s:
        tpl = Template(
            workspace_id=live_server.workspace_id, name=XSS, channel="email", subject=XSS, body=XSS
        )
        msg = Message(
            workspace_id=live_server.workspace_id,
            contact_id=contact_id,
            channel="email",
            to_address=XSS,
            subject=XSS,
            body=XSS,
            status="failed",
            reason=XSS,
        )
        s.add_all([tpl, msg])
        await s.flush()
    pages = (
        "/",
        "/contacts",
        f"/contacts/{contact_id}",
        "/templates",
        f"/templates/{tpl.id}",
        f"/messages/{msg.id}",
    )
    for path in pages:
        await page.goto(path)
        await expect(page.get_by_text(XSS).first).to_be_visible()
        # Rendered as text: no element came out of the payload (CSP would also stop it running).
        assert await page.locator("main img, main script").count() == 0, path
    # And through the live path: a change by someone else is inserted as text.
    await page.goto(f"/contacts/{contact_id}")
    other = await live_server.user("agent")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        token = (await c.post("/api/v1/auth/login", json={"email": other, "password": PASSWORD})).json()[
            "access_token"
        ]
        r = await c.patch(
            f"/api/v1/contacts/{contact_id}",
            json={"name": XSS + "!", "attributes": {"new<b>": XSS}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
    await expect(page.locator("#contact-title")).to_have_text(XSS + "!", timeout=10_000)
    await expect(page.get_by_label("new<b>")).to_have_value(XSS, timeout=10_000)
    assert await page.evaluate("window.__xss") is None


async def _created(server: LiveServer, channel: str = "sms") -> int:
    async with server.db.transaction() as s:
        m = Message(workspace_id=server.workspace_id, channel=channel, to_address="+1", status="queued")
        s.add(m)
        await s.flush()
        data = {
            "message_id": m.id,
            "contact_id": None,
            "channel": channel,
            "status": "queued",
            "provider": None,
            "reason": None,
        }
        await emit(s, server.workspace_id, "message.created", data)
        return m.id


async def test_board_falls_back_to_polling_when_the_socket_drops_and_misses_nothing(
    live_server: LiveServer, browser: Any
) -> None:
    """The socket works, then drops and cannot come back: the board switches to long-polling from
    the last event it saw; events raised in the gap appear once each."""
    email = await live_server.user("agent")
    sockets: list[Any] = []

    async def route(ws: Any) -> None:
        if not sockets:
            ws.connect_to_server()  # the first socket goes through to the app
            sockets.append(ws)
        else:
            await ws.close()

    page = await sign_in(browser, live_server, email, ws_route=route)
    await expect(page.locator("body")).to_have_attribute("data-live", "ws", timeout=10_000)
    first = await _created(live_server)
    await expect(page.locator(f"#msg-{first}")).to_have_count(1, timeout=10_000)

    await sockets[0].close()
    gap = [await _created(live_server) for _ in range(3)]
    await expect(page.locator("body")).to_have_attribute("data-live", "poll", timeout=15_000)
    after = await _created(live_server)
    for mid in [first, *gap, after]:
        await expect(page.locator(f"#msg-{mid}")).to_have_count(1, timeout=10_000)
    ids = await page.eval_on_selector_all(
        "#stream-list .row", "rows => rows.map(r => Number(r.dataset.messageId))"
    )
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == len(set(ids)) == 5


async def test_presence_works_while_long_polling(live_server: LiveServer, browser: Any) -> None:
    a_email = await live_server.user("agent", name="Polly Poller")
    b_email = await live_server.user("agent", name="Sally Socket")
    contact_id = await _contact(live_server, name="Katherine Johnson")
    a = await sign_in(browser, live_server, a_email, ws_route=lambda ws: ws.close())
    b = await sign_in(browser, live_server, b_email)
    await a.goto(f"/contacts/{contact_id}")
    await expect(a.locator("body")).to_have_attribute("data-live", "poll", timeout=10_000)
    await b.goto(f"/contacts/{contact_id}")
    await expect(b.locator("#presence")).to_contain_text("Polly Poller", timeout=10_000)
    await expect(a.locator("#presence")).to_contain_text("Sally Socket", timeout=10_000)
    await a.get_by_label("Name", exact=True).fill("K. Johnson")
    await expect(b.locator("#presence li")).to_contain_text("editing", timeout=10_000)
    await a.goto("/")
    await expect(b.locator("#presence")).not_to_contain_text("Polly Poller", timeout=10_000)


async def test_a_socket_closed_with_4401_renews_the_session_and_resumes_from_the_last_event(
    live_server: LiveServer, browser: Any
) -> None:
    """The server closes the socket because the access check failed (4401): the page renews its
    session (POST /session/refresh with the CSRF header) and reconnects with `after`, so events
    raised in between appear once each."""
    email = await live_server.user("agent")
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page = await sign_in(browser, live_server, email, ws_route=route)
    renewals: list[str] = []
    page.on(
        "request",
        lambda r: (
            renewals.append(r.headers.get("x-csrf-token", "")) if r.url.endswith("/session/refresh") else None
        ),
    )
    await expect(page.locator("body")).to_have_attribute("data-live", "ws", timeout=10_000)
    first = await _created(live_server)
    await expect(page.locator(f"#msg-{first}")).to_have_count(1, timeout=10_000)

    await sockets[0].close(code=4401, reason="signed out")
    gap = await _created(live_server)
    for mid in [first, gap]:
        await expect(page.locator(f"#msg-{mid}")).to_have_count(1, timeout=10_000)
    assert len(renewals) == 1 and renewals[0]
    assert len(sockets) == 2
    await expect(page.locator("body")).to_have_attribute("data-live", "ws", timeout=10_000)
    after = await _created(live_server)
    await expect(page.locator(f"#msg-{after}")).to_have_count(1, timeout=10_000)

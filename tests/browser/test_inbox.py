"""The shared inbox in a real browser: two agents, customers' replies posted as signed Twilio
webhooks, "Bob is replying…", the confirm before a second answer, and a phone that long-polls."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import expect
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from server.auth import service as auth_service
from server.conversations.models import Conversation
from server.messages.models import Message
from server.providers.models import Provider
from tests.browser.conftest import PHONE, LiveServer, screenshot, sign_in

pytestmark = pytest.mark.browser

TOKEN = "0123456789abcdef0123456789abcdef"
OURS = "+15005550006"


async def _twilio(server: LiveServer) -> int:
    async with server.db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name="Acme")
        p = Provider(
            workspace_id=ws.id,
            name="Twilio",
            kind="twilio",
            channel="sms",
            config={"account_sid": "AC" + "0" * 32, "auth_token": TOKEN, "from_number": OURS},
            webhook_key="k" * 32,
            enabled=False,  # receives only: nothing is sent to Twilio from a test
        )
        s.add(p)
        await s.flush()
        return p.id


async def _customer_writes(
    server: LiveServer, provider_id: int, text: str, sender: str = "+15558675310"
) -> None:
    """What Twilio posts for an incoming SMS, signed with the connection's auth token."""
    sid = "SM" + uuid.uuid4().hex
    form = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": OURS,
        "Body": text,
        "NumMedia": "0",
    }
    url = f"{server.url}/webhooks/{provider_id}"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            url,
            content=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
        )
    assert r.status_code == 200 and r.text.endswith("<Response/>"), r.text


async def _conversation(server: LiveServer) -> int:
    async with server.db.transaction() as s:
        return int(
            (await s.execute(select(Conversation.id).order_by(Conversation.id.desc()))).scalars().first()
        )


async def test_an_sms_reply_appears_in_both_agents_inboxes_without_reload(
    live_server: LiveServer, browser: Any
) -> None:
    live_server.needs("/inbox")
    ann = await sign_in(browser, live_server, await live_server.user("agent", name="Ann"))
    bob = await sign_in(browser, live_server, await live_server.user("agent", name="Bob"))
    twilio = await _twilio(live_server)
    for page in (ann, bob):
        await page.get_by_role("link", name="Inbox").click()
        await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
        await expect(page.locator("body")).to_have_attribute("data-live", "ws", timeout=10_000)
    await _customer_writes(live_server, twilio, "Is my parcel coming today?")
    for page in (ann, bob):
        row = page.locator("#conv-items .conv-row").first
        await expect(row).to_contain_text("Is my parcel coming today?", timeout=10_000)
        await expect(row.locator(".badge")).to_have_text("1")
    # Ann opens it (j: the first conversation): her badge clears, Bob's stays until he reads it.
    await ann.keyboard.press("j")
    await expect(ann.locator("#timeline")).to_contain_text("Is my parcel coming today?")
    await expect(ann.locator("#conv-items .conv-row.current .badge")).to_have_count(0, timeout=10_000)
    await _customer_writes(live_server, twilio, "It's for my mum's birthday")
    await expect(ann.locator("#timeline")).to_contain_text("mum's birthday", timeout=10_000)
    await expect(bob.locator("#conv-items .conv-row .badge").first).to_have_text("2", timeout=10_000)
    # The keyboard help.
    await ann.keyboard.press("?")
    await expect(ann.get_by_role("heading", name="Keyboard shortcuts")).to_be_visible()
    await ann.keyboard.press("Escape")
    # Assign to me (a) and resolve (e) from the keyboard; Bob's list follows.
    await ann.keyboard.press("a")
    await expect(ann.locator("#conv-assignee")).to_have_text("assigned to Ann", timeout=10_000)
    await ann.keyboard.press("e")
    await expect(ann.locator("#conv-status")).to_have_text("resolved", timeout=10_000)
    await expect(bob.locator("#conv-items .conv-row")).to_have_count(
        0, timeout=10_000
    )  # Bob's view: open only
    await screenshot(ann, "inbox-desktop")


async def test_bob_typing_shows_on_anns_screen_and_her_send_asks_first(
    live_server: LiveServer, browser: Any
) -> None:
    live_server.needs("/inbox")
    ann = await sign_in(browser, live_server, await live_server.user("agent", name="Ann"))
    bob = await sign_in(browser, live_server, await live_server.user("agent", name="Bob"))
    twilio = await _twilio(live_server)
    await _customer_writes(live_server, twilio, "Can I get a refund?")
    conv = await _conversation(live_server)
    for page in (ann, bob):
        await page.goto(f"/inbox/{conv}")
        await expect(page.locator("body")).to_have_attribute("data-live", "ws", timeout=10_000)
    await bob.locator("#reply-text").click()
    started = time.monotonic()
    await bob.locator("#reply-text").press_sequentially("Let me check")
    await expect(ann.locator("#replying")).to_have_text("Bob is replying…", timeout=5_000)
    shown_after = time.monotonic() - started
    # Ann's list marks the conversation too.
    await expect(
        ann.locator(f'#conv-items .conv-row[data-conversation-id="{conv}"] .typing')
    ).to_contain_text("Bob")
    # Ann writes and sends: she is asked first.
    await ann.locator("#reply-text").fill("Yes, of course")
    await ann.locator("#reply-send").click()
    await expect(ann.locator("#collision")).to_be_visible()
    await expect(ann.locator("#collision-text")).to_contain_text("Bob is replying")
    await expect(ann.locator("#reply-send")).to_have_text("Send anyway")
    await ann.locator("#collision-cancel").click()
    await expect(ann.locator("#collision")).to_be_hidden()
    # She left the box when she clicked Send: Bob does not see her replying, so his send asks nothing.
    await expect(bob.locator("#replying")).to_have_text("", timeout=5_000)
    # Bob sends; his "replying" ends, and Ann's next try names what he did.
    await bob.locator("#reply-send").click()
    await expect(ann.locator("#replying")).to_have_text("", timeout=10_000)
    await expect(ann.locator("#timeline")).to_contain_text("Let me check", timeout=10_000)
    await ann.locator("#reply-send").click()
    await expect(ann.locator("#collision-text")).to_contain_text("Bob already answered")
    await ann.locator("#reply-send").click()  # "Send anyway"
    await expect(ann.locator("#timeline")).to_contain_text("Yes, of course", timeout=10_000)
    await expect(ann.locator("#reply-text")).to_have_value("")
    async with live_server.db.transaction() as s:
        bodies = (await s.execute(select(Message.body).order_by(Message.id))).scalars().all()
    assert bodies == ["Let me check", "Yes, of course"]
    print(f"'Bob is replying…' shown {shown_after:.2f}s after he started typing")


async def test_a_phone_with_websockets_blocked_follows_the_inbox_by_long_poll(
    live_server: LiveServer, browser: Any
) -> None:
    live_server.needs("/inbox")
    email = await live_server.user("agent", name="Polly Phone")
    twilio = await _twilio(live_server)
    page = await sign_in(browser, live_server, email, viewport=PHONE, ws_route=lambda ws: ws.close())
    await page.goto("/inbox")
    await expect(page.locator("body")).to_have_attribute("data-live", "poll", timeout=10_000)
    await _customer_writes(live_server, twilio, "Hello from the bus stop", sender="+15550001111")
    row = page.locator("#conv-items .conv-row").first
    await expect(row).to_contain_text("Hello from the bus stop", timeout=10_000)
    await row.locator("a").click()
    await expect(page.locator("#timeline")).to_contain_text("Hello from the bus stop")
    await expect(page.locator(".inbox-side")).to_be_hidden()  # one pane at a time on a phone
    await expect(page.locator("body")).to_have_attribute("data-live", "poll", timeout=10_000)
    await _customer_writes(live_server, twilio, "Are you still there?", sender="+15550001111")
    await expect(page.locator("#timeline")).to_contain_text("Are you still there?", timeout=10_000)
    await page.locator("#reply-text").fill("Yes! On our way.")
    await page.locator("#reply-send").click()
    await expect(page.locator("#timeline")).to_contain_text("Yes! On our way.", timeout=10_000)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"horizontal scrolling at {width}px"
    await screenshot(page, "inbox-phone")
    await page.get_by_role("link", name="← Inbox").click()
    await expect(page.locator("#conv-items .conv-row").first).to_contain_text("Are you still there?")

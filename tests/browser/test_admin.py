"""Templates, providers, sending from the contact page and reports, through the forms, with no
script error or blocked resource on any page."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.async_api import expect

from server.contacts.service import create_contact
from server.templates.service import create_template
from tests.browser.conftest import PHONE, LiveServer, screenshot, sign_in

pytestmark = pytest.mark.browser


def _watch(page: Any) -> list[str]:
    """Collect page errors and console errors (a CSP violation is one)."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    return problems


async def test_admin_manages_templates_and_providers_and_sends(live_server: LiveServer, browser: Any) -> None:
    for path in ("/api/v1/templates", "/api/v1/providers", "/api/v1/messages"):
        live_server.needs(path)
    page = await sign_in(browser, live_server, await live_server.user("admin", name="Ada Admin"))
    problems = _watch(page)
    async with live_server.db.transaction() as s:
        contact = await create_contact(
            s,
            workspace_id=live_server.workspace_id,
            user_id=None,
            data={
                "name": "Grace",
                "email": f"{uuid.uuid4().hex[:6]}@example.test",
                "phone": None,
                "attributes": {},
                "tags": [],
            },
        )

    # A provider, through the form.
    await page.goto("/providers")
    await page.get_by_label("Name").fill("Sandbox mail")
    await page.get_by_label("Kind").select_option("sandbox")
    await page.get_by_label("Channel").select_option("email")
    await page.get_by_label("Config (JSON object; secrets are write-only)").fill('{"delivery_delay_ms": 100}')
    await page.get_by_role("button", name="Connect").click()
    await page.wait_for_url("**/providers/*")
    await expect(page.get_by_role("heading", name="Sandbox mail")).to_be_visible()
    await expect(page.locator(".facts")).to_contain_text("/webhooks/")
    await page.goto("/providers")
    await expect(page.locator("#provider-table")).to_contain_text("Sandbox mail")
    await screenshot(page, "providers-desktop")

    # A template, through the form, then its preview for the contact.
    await page.goto("/templates")
    await page.get_by_label("Name", exact=True).fill("Welcome")
    await page.get_by_label("Channel").select_option("email")
    await page.get_by_label("Subject", exact=True).fill("Hi {{ contact.name }}")
    await page.locator("#t-body").fill("Hello {{ contact.name }}, welcome.")
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url("**/templates/*")
    await page.get_by_label("Contact").select_option(str(contact.id))
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("#preview-body")).to_have_text("Hello Grace, welcome.")
    await screenshot(page, "template-desktop")
    await page.locator("#t-body").fill("{{ contact.name }}: hello again")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator(".problem .ok")).to_have_text("Saved.")

    # Send from the contact page with the template, after previewing it.
    await page.goto(f"/contacts/{contact.id}")
    await page.get_by_label("Template").select_option(label="Welcome (email)")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("#preview-body")).to_have_text("Grace: hello again")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page.locator("#send-form .ok")).to_contain_text("Message #")
    await expect(page.locator("#contact-messages")).to_contain_text("email", timeout=10_000)

    # The board shows it; the reports page draws its chart.
    await page.goto("/")
    await expect(page.locator("#stream-list .row")).to_have_count(1)
    await page.goto("/reports")
    await expect(page.locator("figure.chart svg")).to_be_visible()
    await screenshot(page, "reports-desktop")
    await page.set_viewport_size(PHONE)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert problems == []


async def test_template_editor_takes_a_whatsapp_approved_template(
    live_server: LiveServer, browser: Any
) -> None:
    live_server.needs("/api/v1/templates")
    page = await sign_in(browser, live_server, await live_server.user("agent"))
    problems = _watch(page)
    await page.goto("/templates")
    fields = page.locator("#wa-fields")
    await expect(fields).to_be_hidden()
    await page.get_by_label("Name", exact=True).fill("Shipping")
    await page.get_by_label("Channel").select_option("whatsapp")
    await expect(fields).to_be_visible()
    await page.locator("#t-body").fill("Hi {{ contact.name }}, it shipped.")
    await page.get_by_label("Approved template name").fill("Shipping-Update")
    await page.get_by_label("Language code").fill("en_US")
    await page.get_by_label("Body parameters").fill("{{ contact.name }}\n\n")
    await page.get_by_label("Header parameter").select_option("image")
    await page.get_by_label("Header text, or the media's link").fill(
        "https://cdn.example.test/{{ attributes.photo }}"
    )
    await page.get_by_label("Button 1 kind").select_option("url")
    await page.get_by_label("Button 1 index").fill("12")
    await page.get_by_label("Button 1 parameter").fill("track/{{ attributes.order }}")
    await page.get_by_role("button", name="Create").click()
    # The server's 422, field by field, in the form's problem box.
    problem = page.locator("form[data-api-url='/api/v1/templates'] .problem")
    await expect(problem).to_contain_text("whatsapp.name:")
    await expect(problem).to_contain_text("whatsapp.buttons.0.index:")
    await page.get_by_label("Approved template name").fill("shipping_update")
    await page.get_by_label("Button 1 index").fill("0")
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url("**/templates/*")
    await expect(page.get_by_label("Approved template name")).to_have_value("shipping_update")
    await expect(page.get_by_label("Body parameters")).to_have_value("{{ contact.name }}")
    await expect(page.get_by_label("Button 1 index")).to_have_value("0")
    # Moved to SMS, the fields go and the metadata is removed with them.
    await page.get_by_label("Channel").select_option("sms")
    await expect(page.locator("#wa-fields")).to_be_hidden()
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator(".problem .ok")).to_have_text("Saved.")
    template_id = page.url.rsplit("/", 1)[1]
    r = await page.request.get(f"/api/v1/templates/{template_id}")
    assert (await r.json())["whatsapp"] is None
    assert [p for p in problems if "status of 422" not in p] == []  # the refused Create logs one


async def test_keyboard_reaches_the_main_controls(live_server: LiveServer, browser: Any) -> None:
    page = await sign_in(browser, live_server, await live_server.user("agent"))
    await page.goto("/contacts")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    await page.get_by_label("Search").focus()
    await page.keyboard.type("nobody-matches-this")
    await expect(page.locator("#contact-results")).to_contain_text("No contacts match.", timeout=5_000)
    await expect(page).to_have_url(live_server.url + "/contacts?q=nobody-matches-this")
    # Every form control on the main pages has a label.
    for path in ("/", "/contacts", "/templates", "/reports"):
        await page.goto(path)
        unlabelled = await page.evaluate(
            """Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], (path, unlabelled)


async def test_csv_import_shows_progress_and_rejected_rows(live_server: LiveServer, browser: Any) -> None:
    page = await sign_in(browser, live_server, await live_server.user("agent"))
    problems = _watch(page)
    await page.goto("/contacts")
    rows = "".join(f"Person {i},p{i}@example.test\n" for i in range(450))
    csv = ("name,email\n" + rows + "Broken,not-an-email\n<b>x</b>,p1@example.test\n").encode()
    await page.set_input_files(
        "#import-file", files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": csv}]
    )
    await page.get_by_role("button", name="Import").click()
    await expect(page.locator("#import-summary")).to_have_text(
        "452 of 452 rows, 450 imported, 2 rejected, done.", timeout=20_000
    )
    assert await page.get_attribute("#import-progress", "value") == "452"
    rejected = page.locator("#import-rejected tr")
    await expect(rejected).to_have_count(2)
    await expect(rejected.nth(0)).to_contain_text("452")
    await expect(rejected.nth(0)).to_contain_text("email")
    await expect(rejected.nth(1)).to_contain_text("already used")
    await expect(page.locator("#contact-results")).to_contain_text("Person 449")
    await screenshot(page, "contacts-import-desktop")
    assert problems == []


async def test_a_search_is_sent_as_a_campaign_and_its_progress_shows(
    live_server: LiveServer, browser: Any
) -> None:
    live_server.needs("/api/v1/campaigns")
    page = await sign_in(browser, live_server, await live_server.user("agent"))
    problems = _watch(page)
    tag = uuid.uuid4().hex[:8]
    async with live_server.db.transaction() as s:
        for name in ("Ada North", "Ada South", "Bob West"):
            await create_contact(
                s,
                workspace_id=live_server.workspace_id,
                user_id=None,
                data={
                    "name": name,
                    "email": f"{uuid.uuid4().hex[:6]}@example.test",
                    "phone": None,
                    "attributes": {},
                    "tags": [tag] if name.startswith("Ada") else [],
                },
            )
        await create_template(
            s,
            workspace_id=live_server.workspace_id,
            data={"name": f"News {tag}", "channel": "email", "subject": "Hi", "body": "Hello {{ name }}"},
        )

    await page.goto(f"/contacts?tag={tag}")
    await page.get_by_role("link", name="Send a campaign to all 2 matching").click()
    await page.wait_for_url("**/campaigns?*")
    await expect(page.get_by_text("2 contacts match this audience now")).to_be_visible()
    await expect(page.get_by_label("and/or with the tag")).to_have_value(tag)
    await page.get_by_label("Name", exact=True).fill(f"Spring {tag}")
    await page.get_by_label("Template").select_option(label=f"News {tag} (email)")
    await page.get_by_role("button", name="Start").click()
    row = page.locator("#campaign-rows tr", has_text=f"Spring {tag}")
    await expect(row.locator(".status")).to_have_text("done", timeout=10_000)
    await expect(row.locator(".created")).to_have_text("2 / 2")
    await screenshot(page, "campaigns-desktop")

    cancel = row.get_by_role("button", name="Cancel")
    assert (
        await cancel.evaluate("b => getComputedStyle(b).color") != "rgb(255, 255, 255)"
    )  # not white on white
    # The sign-in helper's page dismisses dialogs: a dismissed confirm cancels nothing.
    await cancel.click()
    await page.wait_for_timeout(300)
    assert await row.locator(".status").text_content() == "done"
    await page.evaluate("window.confirm = () => true")
    await row.get_by_role("button", name="Cancel").click()
    await expect(row.locator(".status")).to_have_text("canceled")
    await page.set_viewport_size(PHONE)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert problems == []

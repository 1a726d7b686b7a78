"""The contacts page's "Apply to all N matching" form: shown for a search, CSRF-checked, starting
the same audited bulk action as the API; a delete needs its confirmation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.audit.models import AuditEntry
from server.contacts.models import Contact
from tests.ui.conftest import BrowserFactory, csrf_field


async def _tags(app: Any) -> dict[str, list[str]]:
    async with app.state.services.db.transaction() as s:
        return {n: t for n, t in await s.execute(select(Contact.name, Contact.tags))}


async def test_apply_to_all_matching_tags_the_search_and_deletes_only_when_confirmed(
    app: Any, browser_client: BrowserFactory
) -> None:
    admin = await browser_client("admin")
    for name, email in (("Ada One", "ada1@x.test"), ("Ada Two", "ada2@x.test"), ("Bob", "bob@x.test")):
        assert (await admin.post("/api/v1/contacts", json={"name": name, "email": email})).status_code == 201
    assert 'id="bulk-form"' not in (await admin.get("/contacts")).text  # no search: no bulk form
    page = await admin.get("/contacts?q=ada")
    assert "Apply to all 2 matching" in page.text
    token = csrf_field(page.text)
    del admin.headers["X-CSRF-Token"]
    form = {"q": "ada", "tag": "", "action": "tag", "bulk_tag": "vip"}
    assert (await admin.post("/contacts/bulk", data=form)).status_code == 403  # no CSRF token
    r = await admin.post("/contacts/bulk", data={**form, "csrf_token": token})
    assert r.status_code == 303, r.text
    await app.state.services.bulk.wait()
    shown = await admin.get(r.headers["location"])
    assert "Started bulk job #" in shown.text and "on 2 contacts (done)" in shown.text
    assert await _tags(app) == {"Ada One": ["vip"], "Ada Two": ["vip"], "Bob": []}

    delete = {"q": "", "tag": "vip", "action": "delete", "csrf_token": token}
    assert (await admin.post("/contacts/bulk", data=delete)).status_code == 422  # not confirmed
    assert set(await _tags(app)) == {"Ada One", "Ada Two", "Bob"}
    r = await admin.post("/contacts/bulk", data={**delete, "confirm": "yes"})
    assert r.status_code == 303, r.text
    await app.state.services.bulk.wait()
    assert await _tags(app) == {"Bob": []}
    async with app.state.services.db.transaction() as s:
        actions = [a for (a,) in await s.execute(select(AuditEntry.action).order_by(AuditEntry.id))]
    assert actions.count("contacts.bulk") == 2


async def test_agents_get_no_delete_and_viewers_no_form(app: Any, browser_client: BrowserFactory) -> None:
    agent = await browser_client("agent")
    viewer = await browser_client("viewer")
    assert (await agent.post("/api/v1/contacts", json={"name": "Ada", "tags": ["t"]})).status_code == 201
    page = await agent.get("/contacts?tag=t")
    assert "Apply to all 1 matching" in page.text and 'value="delete"' not in page.text
    r = await agent.post(
        "/contacts/bulk",
        data={"q": "", "tag": "t", "action": "delete", "confirm": "yes", "csrf_token": csrf_field(page.text)},
    )
    assert r.status_code == 403
    assert 'id="bulk-form"' not in (await viewer.get("/contacts?tag=t")).text
    assert list(await _tags(app)) == ["Ada"]

from __future__ import annotations

from typing import Any

from server.contacts.service import create_contact
from server.db import utcnow
from server.messages import counters
from server.messages.models import Message, MessageEvent
from server.providers.models import Provider
from server.templates.models import Template
from tests.ui.conftest import BrowserFactory

SCRIPT = "<script>alert('x')</script>"
ATTR = '"><img src=x onerror=alert(1)>'


async def _workspace_id(c: Any) -> int:
    return int((await c.get("/api/v1/me")).json()["workspace_id"])


async def _seed(app: Any, workspace_id: int) -> dict[str, int]:
    async with app.state.services.db.transaction() as s:
        contact = await create_contact(
            s,
            workspace_id=workspace_id,
            user_id=None,
            data={
                "name": SCRIPT,
                "email": "x@example.test",
                "phone": None,
                "attributes": {ATTR: ATTR, "plan": {"nested": SCRIPT}},
                "tags": [SCRIPT],
            },
        )
        tpl = Template(
            workspace_id=workspace_id,
            name=SCRIPT,
            channel="email",
            subject=ATTR,
            body=SCRIPT + "{{ contact.name }}",
        )
        provider = Provider(
            workspace_id=workspace_id,
            name=SCRIPT,
            kind="sandbox",
            channel="email",
            config={"secret": "hunter2"},
            webhook_key="k",
        )
        s.add_all([tpl, provider])
        await s.flush()
        m = Message(
            workspace_id=workspace_id,
            contact_id=contact.id,
            channel="email",
            to_address=ATTR,
            subject=SCRIPT,
            body=SCRIPT,
            status="sent",
            provider_kind="sandbox",
            provider_id=provider.id,
            reason=SCRIPT,
        )
        s.add(m)
        await s.flush()
        s.add(MessageEvent(workspace_id=workspace_id, message_id=m.id, status="sent", reason=SCRIPT))
    return {"contact": contact.id, "template": tpl.id, "provider": provider.id, "message": m.id}


def _assert_escaped(html: str, *payloads: str) -> None:
    for p in payloads:
        assert p not in html
    assert "<script>alert" not in html
    assert "onerror=alert(1)>" not in html or "&#34;&gt;&lt;img" in html
    assert "<img src=x" not in html


async def test_every_page_renders_user_data_escaped(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("admin")
    ids = await _seed(app, await _workspace_id(c))
    pages = [
        "/",
        "/board/stream",
        f"/messages/{ids['message']}",
        f"/messages/{ids['message']}/timeline",
        "/contacts",
        "/contacts/list?q=x",
        f"/contacts/{ids['contact']}",
        f"/contacts/{ids['contact']}/history",
        f"/contacts/{ids['contact']}/messages",
        "/templates",
        f"/templates/{ids['template']}",
        "/providers",
        f"/providers/{ids['provider']}",
        "/reports",
    ]
    for path in pages:
        r = await c.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        _assert_escaped(r.text, SCRIPT, ATTR)
    contact = (await c.get(f"/contacts/{ids['contact']}")).text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in contact
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in contact
    # Provider secrets are never shown.
    for path in ("/providers", f"/providers/{ids['provider']}"):
        assert "hunter2" not in (await c.get(path)).text


async def test_board_filters_and_counters(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    ws = await _workspace_id(c)
    async with app.state.services.db.transaction() as s:
        deltas = counters.Deltas()  # written beside the rows, as every message-creating path does
        for channel, status in [("email", "delivered"), ("sms", "failed"), ("email", "queued")]:
            s.add(
                Message(
                    workspace_id=ws,
                    channel=channel,
                    to_address="a@b.test",
                    status=status,
                    provider_kind="sandbox",
                )
            )
            deltas.created(ws, utcnow(), channel, status)
        await counters.record(s, deltas)
    board = await c.get("/")
    assert 'data-count-status="delivered">1<' in board.text
    assert 'data-count-channel="email">2<' in board.text
    assert "data-count-total>3<" in board.text
    only_sms = await c.get("/board/stream?channel=sms")
    assert only_sms.text.count('class="row"') == 1
    assert "s-failed" in only_sms.text
    bogus = await c.get("/board/stream?channel=<x>")
    assert bogus.text.count('class="row"') == 3


async def test_other_workspaces_data_is_not_shown(app: Any, browser_client: BrowserFactory) -> None:
    mine = await browser_client("admin", workspace="Acme")
    theirs = await browser_client("admin", workspace="Other")
    ids = await _seed(app, await _workspace_id(theirs))
    for path in (
        f"/contacts/{ids['contact']}",
        f"/messages/{ids['message']}",
        f"/templates/{ids['template']}",
        f"/providers/{ids['provider']}",
    ):
        assert (await mine.get(path)).status_code == 404, path
    assert "x@example.test" not in (await mine.get("/contacts")).text


async def test_providers_page_is_for_admins(app: Any, browser_client: BrowserFactory) -> None:
    agent = await browser_client("agent")
    r = await agent.get("/providers")
    assert r.status_code == 403
    assert "admin" in r.text
    assert 'href="/providers"' not in (await agent.get("/")).text


async def test_contact_search_and_pagination(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    for i in range(30):
        r = await c.post(
            "/api/v1/contacts", json={"name": f"Person {i:02d}", "tags": ["odd" if i % 2 else "even"]}
        )
        assert r.status_code == 201
    first = await c.get("/contacts/list")
    assert first.text.count("data-contact-id=") == 25
    assert "Next page" in first.text
    found = await c.get("/contacts/list?q=person 07")
    assert found.text.count("data-contact-id=") == 1
    tagged = await c.get("/contacts/list?tag=odd")
    assert tagged.text.count("data-contact-id=") == 15


async def test_reports_count_messages_per_day_and_channel(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    ws = await _workspace_id(c)
    from server.db import utcnow
    from server.reports import job

    # The page counts what the API counts: the statuses each message reached today (its history),
    # as rolled up by the report job.
    now = utcnow()
    histories = [["sent", "delivered"], ["sent", "delivered"], ["sent", "bounced"], ["failed"]]
    async with app.state.services.db.transaction() as s:
        for history in histories:
            m = Message(workspace_id=ws, channel="sms", to_address="+1", status=history[-1])
            s.add(m)
            await s.flush()
            s.add_all(MessageEvent(workspace_id=ws, message_id=m.id, status=st, at=now) for st in history)
    await job.run_once(app.state.services.db)
    r = await c.get("/reports")
    assert r.status_code == 200
    today = utcnow().date().isoformat()
    row = r.text[r.text.index(f"<td>{today}</td><td>sms</td>") :].split("</tr>")[0]
    assert [x.split("<")[0] for x in row.split('class="num">')[1:]] == ["3", "2", "1", "1"]
    assert "<svg" in r.text and 'class="bar m-delivered"' in r.text


def test_circuit_state_reads_the_dispatchers_breakers_without_creating_them() -> None:
    from ui.admin import circuit_state

    class Circuits:
        def states(self) -> dict[int, str]:
            return {7: "open"}

    assert circuit_state(Circuits(), 7) == "open"
    assert circuit_state(Circuits(), 8) == "closed"
    assert circuit_state(None, 7).startswith("unknown")


async def test_message_page_offers_cancel_only_while_cancelable(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    ws = await _workspace_id(c)
    async with app.state.services.db.transaction() as s:
        queued = Message(workspace_id=ws, channel="sms", to_address="+1", status="queued")
        done = Message(workspace_id=ws, channel="sms", to_address="+1", status="delivered")
        s.add_all([queued, done])
        await s.flush()
    assert f"/api/v1/messages/{queued.id}/cancel" in (await c.get(f"/messages/{queued.id}")).text
    assert "/cancel" not in (await c.get(f"/messages/{done.id}")).text
    viewer = await browser_client("viewer")
    assert "/cancel" not in (await viewer.get(f"/messages/{queued.id}")).text

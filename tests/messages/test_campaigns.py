from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from server.contacts.models import Contact
from server.db import Database, utcnow
from server.messages import campaigns
from server.messages.models import Campaign, Message
from tests.conftest import ClientFactory
from tests.messages.support import contact, events, template


async def _workspace_id(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/v1/me")).json()["workspace_id"])


async def _contacts(db: Database, workspace_id: int, n: int, tag: str, start: int = 0) -> None:
    now = utcnow()
    async with db.transaction() as s:
        await s.execute(
            insert(Contact),
            [
                {
                    "workspace_id": workspace_id,
                    "name": f"Person {i}",
                    "email": f"p{i}@example.test",
                    "tags": [tag],
                    "attributes": {},
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, start + n)
            ],
        )


async def _wait_done(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            c = (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()
            if c["status"] != "expanding":
                return c
            await asyncio.sleep(0.05)


async def _campaign_messages(db: Database, campaign_id: int) -> list[Message]:
    async with db.transaction() as s:
        rows = await s.execute(select(Message).where(Message.campaign_id == campaign_id))
        return list(rows.scalars())


async def test_campaign_of_1200_contacts_expands_in_batches(
    client: httpx.AsyncClient, app: Any, db: Database
) -> None:
    app.state.services.campaigns.batch_size = 500
    ws = await _workspace_id(client)
    await _contacts(db, ws, 1200, "vip")
    await _contacts(db, ws, 30, "other", start=5000)
    tpl = await template(client, subject="News for {{ name }}", body="Hello {{ name }}")
    r = await client.post(
        "/api/v1/campaigns", json={"name": "Spring", "template_id": tpl["id"], "audience": {"tag": "vip"}}
    )
    assert r.status_code == 202, r.text
    started = r.json()
    assert (started["status"], started["total"], started["created"]) == ("expanding", 1200, 0)

    done = await _wait_done(client, started["id"])
    assert (done["status"], done["created"], done["total"]) == ("done", 1200, 1200)
    messages = await _campaign_messages(db, started["id"])
    assert len(messages) == 1200
    assert len({m.contact_id for m in messages}) == 1200
    assert all(m.status == "queued" and m.subject.startswith("News for Person ") for m in messages)
    assert len(await events(db, "message.created")) == 1200

    # One progress event per transaction: the creation, then each batch of at most 500.
    progress = await events(db, "campaign.progress")
    assert [(p["created"], p["status"]) for p in progress] == [
        (0, "expanding"),
        (500, "expanding"),
        (1000, "expanding"),
        (1200, "done"),
    ]
    assert all(p["campaign_id"] == started["id"] and p["total"] == 1200 for p in progress)
    listed = (
        await client.get("/api/v1/messages", params={"campaign_id": started["id"], "limit": 500})
    ).json()
    assert len(listed["items"]) == 500 and listed["next_cursor"]


async def test_interrupted_expansion_resumes_without_duplicates(
    client: httpx.AsyncClient, app: Any, db: Database
) -> None:
    ws = await _workspace_id(client)
    await _contacts(db, ws, 250, "vip")
    tpl = await template(client, channel="email", body="Hi {{ name }}")
    async with db.transaction() as s:
        c = await campaigns.create_campaign(
            s,
            workspace_id=ws,
            user_id=None,
            data={"name": "Resume", "template_id": tpl["id"], "audience": {"tag": "vip", "q": None}},
        )
    # A first batch, then the process "dies"; the worker finishes it, and a second expander
    # running at the same time creates nothing twice.
    first = await campaigns.expand_batch(db, c.id, batch_size=100)
    assert (first.created, first.finished) == (100, False)
    created = await asyncio.gather(
        campaigns.expand_pending_campaigns(app.state.services, batch_size=60),
        campaigns.expand_campaign(app.state.services, c.id, batch_size=60),
    )
    assert sum(created) == 150
    messages = await _campaign_messages(db, c.id)
    assert sorted(m.contact_id for m in messages) == sorted({m.contact_id for m in messages})
    assert len(messages) == 250
    async with db.transaction() as s:
        row = await s.get(Campaign, c.id)
        assert row is not None and (row.status, row.created) == ("done", 250)
    assert await campaigns.expand_pending_campaigns(app.state.services) == 0


async def test_campaign_messages_without_address_fail_individually(
    client: httpx.AsyncClient, db: Database
) -> None:
    await contact(client, name="Has mail", email="a@example.test", phone=None, tags=["t"])
    await contact(client, name="No mail", email=None, phone="+14155552671", tags=["t"])
    tpl = await template(client, body="{{ name }}")
    r = await client.post(
        "/api/v1/campaigns", json={"name": "C", "template_id": tpl["id"], "audience": {"q": "mail"}}
    )
    done = await _wait_done(client, r.json()["id"])
    assert done["created"] == 2
    by_name = {m.body or m.reason: m.status for m in await _campaign_messages(db, done["id"])}
    assert by_name == {"Has mail": "queued", "contact has no email address": "failed"}


async def test_whatsapp_campaign_renders_each_contacts_approved_template(
    client: httpx.AsyncClient, db: Database
) -> None:
    await contact(
        client, name="Ada", email=None, phone="+14155552671", tags=["wa"], attributes={"plan": "pro"}
    )
    await contact(
        client, name="Grace", email=None, phone="+14155552672", tags=["wa"], attributes={"plan": "pro"}
    )
    await contact(
        client, name="Nobody", email=None, phone="+14155552673", tags=["wa"], attributes={"plan": " "}
    )
    tpl = await template(
        client,
        channel="whatsapp",
        subject="",
        body="Hi {{ name }}, your {{ attributes.plan }} plan renews soon.",
        whatsapp={"name": "renewal", "language": "en", "parameters": ["{{ name }}", "{{ attributes.plan }}"]},
    )
    r = await client.post(
        "/api/v1/campaigns", json={"name": "Renewal", "template_id": tpl["id"], "audience": {"tag": "wa"}}
    )
    assert r.status_code == 202, r.text
    done = await _wait_done(client, r.json()["id"])
    assert done["created"] == 3
    got = {
        m.to_address: (m.status, m.whatsapp_template, m.reason)
        for m in await _campaign_messages(db, done["id"])
    }
    assert got == {
        "+14155552671": ("queued", {"name": "renewal", "language": "en", "parameters": ["Ada", "pro"]}, None),
        "+14155552672": (
            "queued",
            {"name": "renewal", "language": "en", "parameters": ["Grace", "pro"]},
            None,
        ),
        "+14155552673": (
            "failed",
            None,
            "template error in whatsapp.parameters[1]: is empty (WhatsApp refuses an empty parameter)",
        ),
    }


async def test_a_campaign_reads_tags_and_attributes_only_when_its_template_does_and_renders_them_alike(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A batch leaves the JSON columns out unless the template names them (or `contact`); each
    way of naming them still sees the contact's own values."""
    await contact(
        client, name="Ada", email="ada@example.test", tags=["news", "vip"], attributes={"plan": "pro"}
    )
    await contact(client, name="Grace", email="grace@example.test", tags=["news"], attributes={})
    bodies = {
        "plain": "Hi {{ name }}",
        "direct": "{{ tags|join(',') }}/{{ attributes.plan|default('-') }}",
        "via contact": "{{ contact.tags|length }}/{{ contact.attributes.plan|default('-') }}",
        "tags only": "{{ name }}: {{ tags|join(',') }}",
    }
    got = {}
    for label, body in bodies.items():
        tpl = await template(client, name=label, channel="email", subject=label, body=body)
        r = await client.post(
            "/api/v1/campaigns", json={"name": label, "template_id": tpl["id"], "audience": {"tag": "news"}}
        )
        assert r.status_code == 202, r.text
        done = await _wait_done(client, r.json()["id"])
        got[label] = sorted((m.to_address, m.body) for m in await _campaign_messages(db, done["id"]))
    assert got == {
        "plain": [("ada@example.test", "Hi Ada"), ("grace@example.test", "Hi Grace")],
        "direct": [("ada@example.test", "news,vip/pro"), ("grace@example.test", "news/-")],
        "via contact": [("ada@example.test", "2/pro"), ("grace@example.test", "1/-")],
        "tags only": [("ada@example.test", "Ada: news,vip"), ("grace@example.test", "Grace: news")],
    }


async def test_whatsapp_campaign_renders_header_and_buttons_per_contact(
    client: httpx.AsyncClient, db: Database
) -> None:
    # Same name, different photo and code: the header and button read what the body does not,
    # so a render shared by equal bodies would send one contact's link to the other.
    for phone, photo in (("+14155552681", "a.jpg"), ("+14155552682", "b.jpg")):
        await contact(
            client,
            name="Ada",
            email=None,
            phone=phone,
            tags=["ship"],
            attributes={"photo": photo, "code": photo[0]},
        )
    tpl = await template(
        client,
        channel="whatsapp",
        subject="",
        body="Hi {{ name }}, your parcel is on its way.",
        whatsapp={
            "name": "shipping_update",
            "language": "en_US",
            "parameters": ["{{ name }}"],
            "header": {"type": "image", "parameter": "https://cdn.example.test/{{ attributes.photo }}"},
            "buttons": [{"sub_type": "url", "index": 0, "parameter": "track/{{ attributes.code }}"}],
        },
    )
    r = await client.post(
        "/api/v1/campaigns", json={"name": "Ship", "template_id": tpl["id"], "audience": {"tag": "ship"}}
    )
    assert r.status_code == 202, r.text
    done = await _wait_done(client, r.json()["id"])
    got = {
        m.to_address: (m.whatsapp_template["header"], m.whatsapp_template["buttons"])
        for m in await _campaign_messages(db, done["id"])
        if m.whatsapp_template is not None
    }
    assert got == {
        "+14155552681": (
            {"type": "image", "parameter": "https://cdn.example.test/a.jpg"},
            [{"sub_type": "url", "index": 0, "parameter": "track/a"}],
        ),
        "+14155552682": (
            {"type": "image", "parameter": "https://cdn.example.test/b.jpg"},
            [{"sub_type": "url", "index": 0, "parameter": "track/b"}],
        ),
    }


async def test_campaign_with_deleted_template_stops_as_failed(
    client: httpx.AsyncClient, db: Database
) -> None:
    ws = await _workspace_id(client)
    await _contacts(db, ws, 3, "vip")
    tpl = await template(client)
    async with db.transaction() as s:
        c = await campaigns.create_campaign(
            s,
            workspace_id=ws,
            user_id=None,
            data={"name": "X", "template_id": tpl["id"], "audience": {"tag": "vip"}},
        )
    assert (await client.delete(f"/api/v1/templates/{tpl['id']}")).status_code == 204
    result = await campaigns.expand_batch(db, c.id)
    assert result.finished and result.created == 0
    assert (await client.get(f"/api/v1/campaigns/{c.id}")).json()["status"] == "failed"


async def test_campaign_scoping_validation_and_roles(make_client: ClientFactory, db: Database) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("admin", workspace="Other")
    viewer = await make_client("viewer", workspace="Acme")
    tpl = await template(acme)
    foreign_tpl = await template(other)
    body = {"name": "C", "template_id": tpl["id"], "audience": {"tag": "none"}}
    r = await acme.post("/api/v1/campaigns", json=body)
    assert r.status_code == 202
    cid = r.json()["id"]
    await _wait_done(acme, cid)
    assert (await other.get(f"/api/v1/campaigns/{cid}")).status_code == 404
    assert (await other.get("/api/v1/campaigns")).json()["items"] == []
    assert [c["id"] for c in (await viewer.get("/api/v1/campaigns")).json()["items"]] == [cid]
    assert (await viewer.get(f"/api/v1/campaigns/{cid}")).status_code == 200
    assert (await viewer.post("/api/v1/campaigns", json=body)).status_code == 403

    r = await acme.post("/api/v1/campaigns", json={**body, "template_id": foreign_tpl["id"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "template_id"
    r = await acme.post("/api/v1/campaigns", json={**body, "audience": {}})
    assert r.status_code == 422
    async with db.transaction() as s:
        assert (await s.execute(select(func.count()).select_from(Campaign))).scalar_one() == 1


async def test_shutdown_cancels_expansion_and_the_worker_resumes_it(
    client: httpx.AsyncClient, app: Any, db: Database
) -> None:
    ws = await _workspace_id(client)
    await _contacts(db, ws, 1200, "vip")
    tpl = await template(client)
    r = await client.post(
        "/api/v1/campaigns", json={"name": "S", "template_id": tpl["id"], "audience": {"tag": "vip"}}
    )
    cid = r.json()["id"]
    services = app.state.services
    runner = services.campaigns
    assert runner in services.components
    await asyncio.sleep(0)  # let the expansion begin its first batch
    await runner.stop()  # what app shutdown does
    assert not runner.tasks
    partial = len(await _campaign_messages(db, cid))
    assert partial < 1200 and partial % 500 == 0  # whole batches only
    assert await campaigns.expand_pending_campaigns(services) == 1200 - partial
    messages = await _campaign_messages(db, cid)
    assert len(messages) == len({m.contact_id for m in messages}) == 1200


async def test_an_expansion_killed_mid_batch_resumes_with_one_message_per_contact(
    client: httpx.AsyncClient, app: Any, db: Database, monkeypatch: Any
) -> None:
    from server.messages import counters, service

    ws = await _workspace_id(client)
    await _contacts(db, ws, 230, "vip")
    tpl = await template(client, channel="email", subject="Static", body="Hi {{ name }}")
    async with db.transaction() as s:
        c = await campaigns.create_campaign(
            s,
            workspace_id=ws,
            user_id=None,
            data={"name": "Crash", "template_id": tpl["id"], "audience": {"tag": "vip"}},
        )
    real = service.insert_created
    calls = 0

    async def dies_on_the_second_batch(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        n = await real(*args, **kwargs)  # rows written, then the process dies before commit
        if calls == 2:
            raise RuntimeError("killed")
        return n

    monkeypatch.setattr(service, "insert_created", dies_on_the_second_batch)
    try:
        await campaigns.expand_campaign(app.state.services, c.id, batch_size=100)
    except RuntimeError:
        pass
    monkeypatch.setattr(service, "insert_created", real)
    assert len(await _campaign_messages(db, c.id)) == 100  # the first batch only
    assert await campaigns.expand_pending_campaigns(app.state.services, batch_size=100) == 130
    messages = await _campaign_messages(db, c.id)
    assert sorted(m.contact_id for m in messages) == sorted({m.contact_id for m in messages})
    assert len(messages) == 230
    async with db.transaction() as s:
        names = {r.id: r.name for r in await s.execute(select(Contact.id, Contact.name))}
        window = await counters.window(s, workspace_id=ws)
    assert all(m.body == f"Hi {names[m.contact_id]}" and m.subject == "Static" for m in messages)
    assert window["by_status"]["queued"] == 230


async def _settle(app: Any) -> None:
    """Until this process's campaign work (expansions, cancellations) has ended."""
    await app.state.services.campaigns.wait()


async def _statuses(db: Database, campaign_id: int) -> dict[str, int]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(Message.status, func.count())
            .where(Message.campaign_id == campaign_id)
            .group_by(Message.status)
        )
        return {status: n for status, n in rows}


async def test_canceling_a_campaign_cancels_its_waiting_messages_once_and_is_audited(
    client: httpx.AsyncClient, app: Any, db: Database
) -> None:
    from server.audit.models import AuditEntry

    app.state.services.campaigns.batch_size = 500
    ws = await _workspace_id(client)
    await _contacts(db, ws, 1200, "vip")
    tpl = await template(client)
    later = "2099-01-01T10:00:00Z"  # scheduled: no worker takes them before the cancel
    r = await client.post(
        "/api/v1/campaigns",
        json={"name": "Oops", "template_id": tpl["id"], "audience": {"tag": "vip"}, "send_at": later},
    )
    cid = r.json()["id"]
    assert (await _wait_done(client, cid))["status"] == "done"
    assert await _statuses(db, cid) == {"scheduled": 1200}

    r = await client.post(f"/api/v1/campaigns/{cid}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "canceled"
    await _settle(app)
    assert await _statuses(db, cid) == {"canceled": 1200}
    moved = [e for e in await events(db, "message.status") if e["status"] == "canceled"]
    assert len(moved) == 1200 and {e["reason"] for e in moved} == {"campaign canceled"}
    assert (await client.get(f"/api/v1/campaigns/{cid}")).json()["status"] == "canceled"

    again = await client.post(f"/api/v1/campaigns/{cid}/cancel")  # changes nothing
    assert again.status_code == 202 and again.json()["status"] == "canceled"
    await _settle(app)
    assert len([e for e in await events(db, "message.status") if e["status"] == "canceled"]) == 1200
    progress = [p["status"] for p in await events(db, "campaign.progress")]
    assert progress.count("canceled") == 1
    async with db.transaction() as s:
        audited = (
            (await s.execute(select(AuditEntry.target).where(AuditEntry.action == "campaign.canceled")))
            .scalars()
            .all()
        )
    assert audited == [f"campaign:{cid}", f"campaign:{cid}"]


async def test_a_campaign_canceled_while_expanding_stops_expanding_and_leaves_nothing_waiting(
    client: httpx.AsyncClient, app: Any, db: Database
) -> None:
    ws = await _workspace_id(client)
    await _contacts(db, ws, 1200, "vip")
    tpl = await template(client)
    async with db.transaction() as s:  # expanded by hand below, one batch at a time
        c = await campaigns.create_campaign(
            s,
            workspace_id=ws,
            user_id=None,
            data={
                "name": "Half",
                "template_id": tpl["id"],
                "audience": {"tag": "vip"},
                "send_at": dt.datetime(2099, 1, 1, tzinfo=dt.UTC),  # no worker takes them first
            },
        )
    assert (await campaigns.expand_batch(db, c.id, batch_size=500)).created == 500
    assert (await client.post(f"/api/v1/campaigns/{c.id}/cancel")).status_code == 202
    after = await campaigns.expand_batch(db, c.id, batch_size=500)  # an expander's next batch
    assert (after.created, after.finished) == (0, True)
    await _settle(app)
    assert await _statuses(db, c.id) == {"canceled": 500}
    assert await campaigns.expand_pending_campaigns(app.state.services) == 0  # not resumed either
    assert await app.state.services.campaigns.sweep() == []
    assert await _statuses(db, c.id) == {"canceled": 500}


async def test_a_cancellation_cut_short_is_finished_by_the_sweep(
    client: httpx.AsyncClient, app: Any, db: Database
) -> None:
    ws = await _workspace_id(client)
    await _contacts(db, ws, 30, "vip")
    tpl = await template(client)
    body = {
        "name": "Cut",
        "template_id": tpl["id"],
        "audience": {"tag": "vip"},
        "send_at": "2099-01-01T10:00:00Z",
    }
    cid = (await client.post("/api/v1/campaigns", json=body)).json()["id"]
    await _wait_done(client, cid)
    async with db.transaction() as s:  # what a process that died right after the cancel leaves
        await campaigns.cancel_campaign(s, workspace_id=ws, campaign_id=cid)
    assert await campaigns.cancel_batch(db, cid, batch_size=10) == 10
    assert await app.state.services.campaigns.sweep() == [cid]
    await _settle(app)
    assert await _statuses(db, cid) == {"canceled": 30}


async def test_cancel_scoping_roles_and_a_failed_campaign(
    make_client: ClientFactory, app: Any, db: Database
) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("admin", workspace="Other")
    viewer = await make_client("viewer", workspace="Acme")
    tpl = await template(acme)
    cid = (
        await acme.post(
            "/api/v1/campaigns", json={"name": "C", "template_id": tpl["id"], "audience": {"tag": "x"}}
        )
    ).json()["id"]
    await _wait_done(acme, cid)
    r = await other.post(f"/api/v1/campaigns/{cid}/cancel")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (await viewer.post(f"/api/v1/campaigns/{cid}/cancel")).status_code == 403
    async with db.transaction() as s:
        c = (await s.execute(select(Campaign).where(Campaign.id == cid))).scalar_one()
        c.status = "failed"
    r = await acme.post(f"/api/v1/campaigns/{cid}/cancel")
    assert r.status_code == 409 and r.json()["status_now"] == "failed"

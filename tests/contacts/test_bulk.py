"""Bulk actions on a search (DESIGN §11): tag, untag and delete every contact the contact list's
filter selects, as a leased background job in chunks, with progress events, audited, resumable."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, insert, select

from server.audit.models import AuditEntry
from server.contacts.bulk import BulkActions, BulkConfig
from server.contacts.models import Audit, BulkJob, Contact, ContactIdentity
from server.events.models import Event
from tests.conftest import ClientFactory, until

CHUNK = 2  # several chunks from a handful of contacts


async def _create(client: httpx.AsyncClient, name: str, email: str, tags: list[str] | None = None) -> int:
    r = await client.post("/api/v1/contacts", json={"name": name, "email": email, "tags": tags or []})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _run(app: Any, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/api/v1/contacts/bulk", json=body)
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["status"] == "running" and started["action"] == body["action"]
    await app.state.services.bulk.wait()
    status = (await client.get(f"/api/v1/contacts/bulk/{started['job_id']}")).json()
    assert status["status"] == "done", status
    assert status["total"] == started["total"]
    return status


async def _contacts(app: Any) -> dict[int, tuple[list[str], int]]:
    async with app.state.services.db.transaction() as s:
        rows = await s.execute(select(Contact.id, Contact.tags, Contact.version))
        return {i: (tags, version) for i, tags, version in rows}


async def _progress(app: Any) -> list[dict[str, Any]]:
    async with app.state.services.db.transaction() as s:
        rows = await s.execute(select(Event.data).where(Event.type == "bulk.progress").order_by(Event.id))
        return [d for (d,) in rows]


async def test_tag_on_a_search_touches_exactly_the_matching_contacts_chunk_by_chunk(
    app: Any, make_client: ClientFactory
) -> None:
    app.state.services.bulk.chunk_rows = CHUNK
    agent = await make_client("agent")
    other = await make_client("agent", workspace="Other")
    adas = [await _create(agent, f"Ada {i}", f"ada{i}@x.test") for i in range(5)]
    already = await _create(agent, "Ada Tagged", "ada.t@x.test", ["vip"])
    bobs = [await _create(agent, f"Bob {i}", f"bob{i}@x.test") for i in range(3)]
    foreign = await _create(other, "Ada Elsewhere", "ada@other.test")

    status = await _run(app, agent, {"filter": {"q": "ada"}, "action": "tag", "tag": "vip"})

    assert (status["total"], status["processed"], status["changed"]) == (6, 6, 5)
    assert status["filter"] == {"q": "ada"} and status["error"] is None
    contacts = await _contacts(app)
    assert all(contacts[i] == (["vip"], 2) for i in adas)
    assert contacts[already] == (["vip"], 1)  # had it: unchanged, no new version
    assert all(contacts[i] == ([], 1) for i in bobs)
    assert contacts[foreign] == ([], 1)
    # Each contact's history answers who tagged it, at the version an If-Match check reads.
    history = (await agent.get(f"/api/v1/contacts/{adas[0]}/history")).json()["items"]
    assert (history[0]["field"], history[0]["old"], history[0]["new"], history[0]["version"]) == (
        "tags",
        [],
        ["vip"],
        2,
    )
    assert history[0]["user_id"] is not None
    r = await agent.patch(f"/api/v1/contacts/{adas[0]}", json={"tags": ["x"]}, headers={"If-Match": '"1"'})
    assert r.status_code == 409  # the bulk tag changed tags at version 2
    # One progress event per chunk (2 + 2 + 2, then an empty one that ends it), done only at the end.
    events = await _progress(app)
    assert [(e["processed"], e["done"]) for e in events] == [(2, False), (4, False), (6, False), (6, True)]
    assert all(e["job_id"] == status["job_id"] and e["refresh"] == "contacts" for e in events)
    assert all(e["action"] == "tag" and e["total"] == 6 and e["error"] is None for e in events)
    assert sorted(i for e in events for i in e["contact_ids"]) == sorted(adas)
    async with app.state.services.db.transaction() as s:
        types = {t for (t,) in await s.execute(select(Event.type).where(Event.type.like("contact.%")))}
    assert types == {"contact.created"}  # no contact.updated per tagged contact


async def test_untag_on_a_tag_filter_and_the_audit_log_entry(app: Any, make_client: ClientFactory) -> None:
    app.state.services.bulk.chunk_rows = CHUNK
    admin = await make_client("admin")
    other = await make_client("agent", workspace="Other")
    both = [await _create(admin, f"P{i}", f"p{i}@x.test", ["a", "b"]) for i in range(3)]
    only_b = [await _create(admin, f"Q{i}", f"q{i}@x.test", ["b"]) for i in range(2)]
    foreign = await _create(other, "R", "r@other.test", ["a"])

    status = await _run(app, admin, {"filter": {"tag": "a"}, "action": "untag", "tag": "a"})

    assert (status["total"], status["processed"], status["changed"]) == (3, 3, 3)
    contacts = await _contacts(app)
    assert all(contacts[i] == (["b"], 2) for i in both)
    assert all(contacts[i] == (["b"], 1) for i in only_b)
    assert contacts[foreign] == (["a"], 1)
    events = await _progress(app)
    assert [(e["processed"], e["done"]) for e in events] == [(2, False), (3, True)]
    async with app.state.services.db.transaction() as s:
        entry = (await s.execute(select(AuditEntry).where(AuditEntry.action == "contacts.bulk"))).scalar_one()
    assert entry.target == f"bulk:{status['job_id']}"
    assert entry.details == {"filter": {"tag": "a"}, "action": "untag", "tag": "a", "count": 3}
    assert entry.actor_type == "user"


async def test_delete_on_a_filter_does_what_a_single_delete_does(
    app: Any, make_client: ClientFactory
) -> None:
    app.state.services.bulk.chunk_rows = CHUNK
    agent = await make_client("agent")
    admin = await make_client("admin")
    other = await make_client("admin", workspace="Other")
    gone = [await _create(agent, f"Old {i}", f"old{i}@x.test", ["stale"]) for i in range(3)]
    kept = await _create(agent, "Fresh", "fresh@x.test", ["fresh"])
    foreign = await _create(other, "Old elsewhere", "old@other.test", ["stale"])
    async with app.state.services.db.transaction() as s:
        ws = (await s.execute(select(Contact.workspace_id).where(Contact.id == gone[0]))).scalar_one()
        await s.execute(
            insert(ContactIdentity),
            [{"workspace_id": ws, "contact_id": gone[0], "kind": "email", "value": "old.alias@x.test"}],
        )

    r = await agent.post("/api/v1/contacts/bulk", json={"filter": {"tag": "stale"}, "action": "delete"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    status = await _run(app, admin, {"filter": {"tag": "stale"}, "action": "delete"})

    assert (status["total"], status["processed"], status["changed"]) == (3, 3, 3)
    assert set(await _contacts(app)) == {kept, foreign}
    for i in gone:
        assert (await admin.get(f"/api/v1/contacts/{i}")).status_code == 404
    async with app.state.services.db.transaction() as s:
        identities = (await s.execute(select(func.count()).select_from(ContactIdentity))).scalar_one()
        deleted = list(
            await s.execute(
                select(Audit.contact_id, Audit.old, Audit.new, Audit.version).where(Audit.field == "deleted")
            )
        )
    assert identities == 0  # gone with its contact, as on a single delete
    assert sorted(tuple(d) for d in deleted) == [(i, False, True, 2) for i in gone]
    # The freed address can be used again.
    await _create(admin, "New", "old.alias@x.test")
    events = await _progress(app)
    assert sorted(i for e in events for i in e["contact_ids"]) == gone
    assert events[-1]["done"] is True


async def test_an_empty_filter_must_be_said_and_then_selects_the_whole_workspace(
    app: Any, make_client: ClientFactory
) -> None:
    agent = await make_client("agent")
    other = await make_client("agent", workspace="Other")
    mine = [await _create(agent, f"P{i}", f"p{i}@x.test") for i in range(3)]
    foreign = await _create(other, "R", "r@other.test")
    r = await agent.post("/api/v1/contacts/bulk", json={"action": "tag", "tag": "all"})
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "filter", "message": "Field required"}]
    status = await _run(app, agent, {"filter": {}, "action": "tag", "tag": "all"})
    assert (status["total"], status["changed"], status["filter"]) == (3, 3, {})
    contacts = await _contacts(app)
    assert all(contacts[i][0] == ["all"] for i in mine) and contacts[foreign][0] == []


async def test_bad_requests_are_422_problems(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"filter": {}, "action": "merge"}, "action"),
        ({"filter": {}, "action": "tag"}, "tag"),
        ({"filter": {}, "action": "untag", "tag": "  "}, "tag"),
        ({"filter": {}, "action": "delete", "tag": "x"}, "tag"),
        ({"filter": {}, "action": "tag", "tag": "x" * 65}, "tag"),
        ({"filter": {}, "action": "tag", "tag": "a\x00b"}, "tag"),
        ({"filter": {"name": "x"}, "action": "tag", "tag": "x"}, "filter.name"),
        ({"filter": {"q": 5}, "action": "tag", "tag": "x"}, "filter.q"),
        ({"filter": {"tag": "t" * 65}, "action": "tag", "tag": "x"}, "filter.tag"),
        ({"filter": "everyone", "action": "tag", "tag": "x"}, "filter"),
        ({"filter": {}, "action": "tag", "tag": "x", "extra": 1}, "extra"),
    ]
    for body, field in bad:
        r = await admin.post("/api/v1/contacts/bulk", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in r.json()["errors"]], (body, r.json())
    assert (await admin.get("/api/v1/contacts/bulk/999")).status_code == 404
    assert (await admin.get("/api/v1/contacts/bulk/nope")).status_code == 404


async def test_roles_viewers_cannot_and_agents_cannot_delete(app: Any, make_client: ClientFactory) -> None:
    viewer = await make_client("viewer")
    agent = await make_client("agent")
    await _create(agent, "P", "p@x.test")
    r = await viewer.post("/api/v1/contacts/bulk", json={"filter": {}, "action": "tag", "tag": "x"})
    assert r.status_code == 403
    r = await agent.post("/api/v1/contacts/bulk", json={"filter": {}, "action": "delete"})
    assert r.status_code == 403
    status = await _run(app, agent, {"filter": {}, "action": "tag", "tag": "x"})
    assert (await viewer.get(f"/api/v1/contacts/bulk/{status['job_id']}")).json() == status
    # Another workspace does not see the job.
    outsider = await make_client("admin", workspace="Other")
    assert (await outsider.get(f"/api/v1/contacts/bulk/{status['job_id']}")).status_code == 404


async def test_one_running_bulk_action_per_workspace_then_429(app: Any, make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    other = await make_client("agent", workspace="Other")
    await _create(agent, "P", "p@x.test")
    bulk = app.state.services.bulk
    bulk.stopping = True  # the first job is accepted and stays running (its task waits for a start)
    body = {"filter": {}, "action": "tag", "tag": "x"}
    first = await agent.post("/api/v1/contacts/bulk", json=body)
    assert first.status_code == 202, first.text
    second = await agent.post("/api/v1/contacts/bulk", json=body)
    assert second.status_code == 429
    assert second.headers["retry-after"] == "5"
    assert second.headers["content-type"].startswith("application/problem+json")
    assert (await other.post("/api/v1/contacts/bulk", json=body)).status_code == 202  # per workspace
    status = (await agent.get(f"/api/v1/contacts/bulk/{first.json()['job_id']}")).json()
    assert (status["status"], status["processed"]) == ("running", 0)


async def test_a_job_stopped_after_a_chunk_is_resumed_by_another_instance_exactly_once(
    app: Any, make_client: ClientFactory
) -> None:
    services = app.state.services
    bulk: BulkActions = services.bulk
    bulk.chunk_rows = CHUNK
    agent = await make_client("agent")
    people = [await _create(agent, f"P{i}", f"p{i}@x.test", ["in"]) for i in range(5)]

    def stop_after_one_chunk(_workspace_id: int) -> None:
        bulk.stopping = True  # the job's loop ends after the chunk it just committed

    bulk.on_commit = stop_after_one_chunk
    r = await agent.post(
        "/api/v1/contacts/bulk", json={"filter": {"tag": "in"}, "action": "tag", "tag": "vip"}
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    await bulk.wait()
    await bulk.stop()  # hands the job back
    async with services.db.transaction() as s:
        job = (await s.execute(select(BulkJob).where(BulkJob.id == job_id))).scalar_one()
    assert (job.status, job.processed, job.owner, job.lease_until) == ("running", CHUNK, None, None)
    # Created after the job started: outside its selection even though it matches.
    late = await _create(agent, "Late", "late@x.test", ["in"])

    resumed = BulkActions(services.db, BulkConfig(chunk_rows=CHUNK), on_commit=services.poke)
    await resumed.start()
    try:

        async def finished() -> dict[str, Any] | None:
            status = (await agent.get(f"/api/v1/contacts/bulk/{job_id}")).json()
            return status if status["status"] != "running" else None

        status = await until(finished, within=20, what="the resumed bulk action finished")
        await resumed.wait()
    finally:
        await resumed.stop()
    assert (status["status"], status["total"], status["processed"], status["changed"]) == ("done", 5, 5, 5)
    contacts = await _contacts(app)
    assert all(contacts[i] == (["in", "vip"], 2) for i in people)
    assert contacts[late] == (["in"], 1)
    async with services.db.transaction() as s:
        tagged = list(
            await s.execute(
                select(Audit.contact_id)
                .where(Audit.field == "tags", Audit.version > 1)  # not the creation's rows
                .order_by(Audit.contact_id)
            )
        )
    assert [i for (i,) in tagged] == people  # each contact tagged exactly once
    events = await _progress(app)
    assert [(e["processed"], e["done"]) for e in events] == [(2, False), (4, False), (5, True)]


async def test_the_pages_count_of_matching_contacts_stops_past_its_cap(
    app: Any, make_client: ClientFactory
) -> None:
    from server.contacts.bulk import count_matching

    agent = await make_client("agent")
    for i in range(4):
        await _create(agent, f"Cap {i}", f"cap{i}@x.test")
    async with app.state.services.db.transaction() as s:
        ws = (
            await s.execute(select(Contact.workspace_id).where(Contact.email == "cap0@x.test"))
        ).scalar_one()
        assert await count_matching(s, workspace_id=ws, q="cap", tag=None, cap=10) == 4
        assert await count_matching(s, workspace_id=ws, q="cap", tag=None, cap=2) == 3  # "more than 2"

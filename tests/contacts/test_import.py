"""CSV import through the API: modes, gzip, the per-route size limit, rows refused alone, the
per-contact history, job state in the database, and an upload that never sits in memory."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from server.contacts.import_file import parse_csv, spool
from server.contacts.importer import RowRejected
from server.contacts.models import Audit, Contact, ImportJob
from server.events.models import Event
from tests.conftest import PASSWORD, make_settings


async def _run(app: Any, c: httpx.AsyncClient, body: bytes, *, mode: str = "create", **headers: str) -> Any:
    r = await c.post(
        f"/api/v1/contacts/import?mode={mode}", content=body, headers={"content-type": "text/csv", **headers}
    )
    assert r.status_code == 202, r.text
    await app.state.services.importer.wait()
    status = (await c.get(f"/api/v1/contacts/import/{r.json()['job_id']}")).json()
    assert status["status"] == "done", status
    return status


async def _contacts(app: Any) -> list[tuple[str, str | None, str | None, list[str], dict[str, Any], int]]:
    async with app.state.services.db.transaction() as s:
        rows = (await s.execute(select(Contact).order_by(Contact.id))).scalars()
        return [(c.name, c.email, c.phone, c.tags, c.attributes, c.version) for c in rows]


async def test_create_mode_keeps_new_rows_and_rejects_taken_emails_with_their_line(
    app: Any, client: httpx.AsyncClient
) -> None:
    await _run(app, client, b"name,email\nAda,ada@x.test\n")
    status = await _run(app, client, b"name,email,city\nAda2,ADA@x.test,Paris\nBob,bob@x.test,Rome\n")
    assert (status["created"], status["updated"], status["rejected_count"]) == (1, 0, 1)
    assert status["rejected"] == [
        {"row": 2, "errors": [{"field": "email", "message": "already used by another contact"}]}
    ]
    assert [c[:2] for c in await _contacts(app)] == [("Ada", "ada@x.test"), ("Bob", "bob@x.test")]


async def test_upsert_mode_updates_by_email_else_phone_and_records_each_change(
    app: Any, client: httpx.AsyncClient
) -> None:
    await _run(app, client, b"name,email,phone,tags,plan\nAda,ada@x.test,,a,pro\nPhoney,,+442079460958,,\n")
    body = (
        b"name,email,phone,tags,plan,city\n"
        b"Ada Lovelace,ADA@x.test,,a;b,,London\n"  # by email: name, tags, attributes merged
        b",,+442079460958,,gold,\n"  # by phone (no email): only the attribute it gives
        b"Ada Lovelace,ada@x.test,,a;b,,London\n"  # again, in the same batch: nothing changes
        b"New,new@x.test,,,,\n"
    )
    status = await _run(app, client, body, mode="upsert")
    assert (status["created"], status["updated"], status["rejected_count"]) == (1, 2, 0)
    assert await _contacts(app) == [
        ("Ada Lovelace", "ada@x.test", None, ["a", "b"], {"plan": "pro", "city": "London"}, 2),
        ("Phoney", None, "+442079460958", [], {"plan": "gold"}, 2),
        ("New", "new@x.test", None, [], {}, 1),
    ]
    ada = (await client.get("/api/v1/contacts?q=ada")).json()["items"][0]
    history = (await client.get(f"/api/v1/contacts/{ada['id']}/history")).json()["items"]
    assert sorted((h["field"], h["new"]) for h in history) == [
        ("attributes", {"plan": "pro", "city": "London"}),
        ("created", "import #1"),
        ("name", "Ada Lovelace"),
        ("tags", ["a", "b"]),
    ]
    # A later edit made against the imported version does not conflict with the import's.
    r = await client.patch(f"/api/v1/contacts/{ada['id']}", json={"name": "A."}, headers={"If-Match": '"1"'})
    assert r.status_code == 409  # name was changed by the import at version 2


async def test_one_progress_event_per_batch_and_no_contact_events(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.state.services.importer.batch_size = 4
    body = "name,email\n" + "".join(f"P{i},p{i}@x.test\n" for i in range(10))
    status = await _run(app, client, body.encode())
    assert status["created"] == 10
    async with app.state.services.db.transaction() as s:
        types = [t for (t,) in await s.execute(select(Event.type).order_by(Event.id))]
        audits = (await s.execute(select(func.count()).select_from(Audit))).scalar_one()
    assert types == ["import.progress"] * 3
    assert audits == 10  # one "created by import #N" per contact


async def test_gzip_upload_by_header_and_by_magic_bytes(app: Any, client: httpx.AsyncClient) -> None:
    packed = gzip.compress(b"name,email\nZed,zed@x.test\n")
    await _run(app, client, packed, **{"content-encoding": "gzip"})
    r = await client.post(
        "/api/v1/contacts/import",
        files={"file": ("people.csv.gz", gzip.compress(b"name\nYan\n"), "application/gzip")},
    )
    assert r.status_code == 202, r.text
    await app.state.services.importer.wait()
    await _run(app, client, gzip.compress(b"name\nXi\n"), **{"content-type": "application/octet-stream"})
    assert [c[0] for c in await _contacts(app)] == ["Zed", "Yan", "Xi"]


async def test_a_3_mb_import_passes_the_body_limit_that_other_routes_keep(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.state.services.importer.batch_size = 20_000
    lines = [f"Person {i:06d},p{i}@x.test,{'x' * 80}" for i in range(30_000)]
    body = ("name,email,note\n" + "\n".join(lines) + "\n").encode()
    assert len(body) > 3 * 1024 * 1024
    status = await _run(app, client, body)
    assert (status["created"], status["rejected_count"]) == (30_000, 0)
    r = await client.post(
        "/api/v1/contacts",
        content=b'{"name": "' + b"x" * (1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    small = make_settings(app.state.services.settings.database_url, import_max_bytes=1000)
    other = create_app(small)
    async with other.router.lifespan_context(other):
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other), base_url="http://t", headers=client.headers
        )
        r = await c.post("/api/v1/contacts/import", content=body[:2000], headers={"content-type": "text/csv"})
        assert r.status_code == 413
        await c.aclose()


async def test_rows_with_nul_or_bad_utf8_are_rejected_with_their_line_and_the_rest_kept(
    app: Any, client: httpx.AsyncClient
) -> None:
    body = b"name,email\nAda,ada@x.test\nBad\x00,nul@x.test\nGrace,grace@x.test\nCaf\xe9,latin1@x.test\nEve,eve@x.test\n"
    status = await _run(app, client, body)
    assert (status["created"], status["rejected_count"]) == (3, 2)
    assert [(r["row"], r["errors"][0]["field"], r["errors"][0]["message"]) for r in status["rejected"]] == [
        (3, "name", "contains a NUL byte"),
        (5, "name", "is not valid UTF-8"),
    ]
    assert [c[0] for c in await _contacts(app)] == ["Ada", "Grace", "Eve"]


async def test_unknown_columns_become_attributes(app: Any, client: httpx.AsyncClient) -> None:
    await _run(app, client, b"name,Consent,plan\nAda,yes,\n")
    assert (await _contacts(app))[0][4] == {"consent": "yes"}


async def test_rejected_rows_are_kept_in_the_database_and_read_from_another_instance(pg_url: str) -> None:
    first = create_app(make_settings(pg_url))
    second = create_app(make_settings(pg_url))
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        async with first.state.services.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name="Acme")
            await auth_service.create_user(
                s, workspace_id=ws.id, email="agent@acme.test", password=PASSWORD, role=Role.agent
            )
        a = httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://t")
        b = httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://t")
        r = await a.post("/api/v1/auth/login", json={"email": "agent@acme.test", "password": PASSWORD})
        for c in (a, b):
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        status = await _run(first, a, b"name,email\nA,bad\nB,b@x.test\n")
        assert status["rejected_count"] == 1
        seen = (await b.get(f"/api/v1/contacts/import/{status['job_id']}")).json()
        assert seen == status
        async with second.state.services.db.transaction() as s:
            job = (await s.execute(select(ImportJob))).scalar_one()
        assert (job.status, job.path, job.owner) == ("done", None, None)
        await a.aclose()
        await b.aclose()


async def test_finished_jobs_expire_with_their_rejected_rows(app: Any, client: httpx.AsyncClient) -> None:
    status = await _run(app, client, b"email\nnope\n")
    importer = app.state.services.importer
    await importer.expire()
    assert (await client.get(f"/api/v1/contacts/import/{status['job_id']}")).status_code == 200
    importer.finished_ttl_s = 0.0
    await importer.expire()
    assert (await client.get(f"/api/v1/contacts/import/{status['job_id']}")).status_code == 404


async def test_the_upload_is_streamed_to_disk_without_being_held_in_memory(tmp_path: Path) -> None:
    row = b"Someone Quite Long,someone.quite.long@example.test,+442079460958,a;b;c,plan-gold\n"
    size = 20 * 1024 * 1024
    chunk = row * (65536 // len(row))

    async def body() -> AsyncIterator[bytes]:
        yield b"name,email,phone,tags,plan\n"
        sent = 0
        while sent < size:
            yield chunk
            sent += len(chunk)

    path = tmp_path / "upload.csv"
    tracemalloc.start()
    try:
        written = await spool(body(), path, gzip=None, max_bytes=size * 2)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written > size
    assert path.stat().st_size == written
    assert peak < 4 * 1024 * 1024, peak  # a few buffers, not the 20 MB file


def test_email_normalising_takes_a_shortcut_that_agrees_with_email_validator() -> None:
    from server.validators import _full, normalize_email

    cases = [
        "Ada.Lovelace@Example.TEST", "A+b@sub.Example.com", " a@x.test ", "o'neil@x.test", "a@x.t",
        "a@b.localhost", "x@y.invalid", "a@example", "a@localhost", "a..b@x.test", ".a@x.test",
        "a.@x.test", '"q"@x.test', "a@x.test.", "a@@x.test", "@x.test", "a@", "a@-x.test", "a@x_y.test",
        "a@[1.2.3.4]", "a@1.2.3.4", "a b@x.test", "a@x..test", "ü@x.test", "a@BÜCHER.example",
        "a@xn--bcher-kva.example", "a" * 64 + "@x.test", "a" * 65 + "@x.test",
        "a" * 60 + "@" + ".".join(["b" * 63] * 3) + ".test",
    ]  # fmt: skip

    def outcome(fn: Any, value: str) -> str:
        try:
            return str(fn(value))
        except ValueError as exc:
            return f"refused: {exc}"

    for value in cases:
        assert outcome(normalize_email, value) == outcome(_full, value.strip()), value


def test_rows_are_checked_without_building_the_model_and_come_out_as_the_model_makes_them() -> None:
    """The importer checks a row with ContactIn's own checks and normalisers, not a model per row;
    whatever it keeps is what ContactIn would make of it, and whatever ContactIn refuses it hands
    to ContactIn (which then names the errors, as the API does)."""
    from pydantic import ValidationError

    from server.contacts.importer import _validated, to_contact
    from server.contacts.schemas import ContactIn

    long_tags = [f"t{i}" for i in range(51)]
    names = ["Ada", "", "x" * 300, "x" * 301, "é" * 300, "🙂" * 300, "🙂" * 301, "a\x00b", "  "]
    emails = [
        None, "Ada@Example.TEST", "a@BÜCHER.example", '"q"@x.test', "a" * 65 + "@x.test", "bad", "a@x.test\x00",
        "a" * 310 + "@x.test", "a" * 64 + "@" + "b" * 250 + ".test",
    ]  # fmt: skip
    phones = [None, "+44 20 7946 0958", "0044 20 7946 0958", "+1 (415) 555-2671", "020 7946 0958", "+999 1", "+1" + "2" * 39, "+1" + "2" * 45, "+44\x0020"]  # fmt: skip
    tags_cases = [[], ["a", "a", "b"], ["x" * 64], ["x" * 65], long_tags, long_tags[:50], ["a\x00"]]
    attributes_cases: list[dict[str, Any]] = [
        {}, {"plan": "pro"}, {"timezone": "Europe/Paris"}, {"timezone": "Mars/Base"}, {"k" * 89: "v"},
        {"k" * 90: "v"}, {"": "v"}, {"a\x00": "v"}, {"a": "v\x00"}, {"n": 2**63}, {"n": 2**63 - 1, "f": 1.5},
        {"n": 2.0**70}, {"deep": {"x": [1, "y\x00"]}}, {"deep": {"x": [1, {"y": None, "z": True}]}},
        {"timezone": 3}, {"timezone": None}, {"deep": {"": 1}},
    ]  # fmt: skip

    def by_the_model(raw: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return ContactIn.model_validate(raw).model_dump()
        except ValidationError:
            return None

    raws = [
        {"name": n, "email": e, "phone": p, "tags": t, "attributes": a}
        for n in names[:3]
        for e in emails
        for p in phones
        for t in tags_cases[:2]
        for a in attributes_cases[:3]
    ]
    raws += [{"name": n, "email": "a@x.test", "phone": None, "tags": [], "attributes": {}} for n in names]
    raws += [{"name": "A", "email": None, "phone": None, "tags": t, "attributes": {}} for t in tags_cases]
    raws += [
        {"name": "A", "email": None, "phone": "+14155552671", "tags": [], "attributes": a}
        for a in attributes_cases
    ]
    kept = 0
    for raw in raws:
        expected, got = by_the_model(raw), _validated(raw)
        assert got == expected, raw  # None: refused by the model, and left to it to say why
        assert list(got or {}) == list(expected or {}), raw
        kept += expected is not None
    assert 200 < kept < len(raws) - 200

    # Through to_contact: an exported (neutralised) cell reads as it was; errors are the model's.
    rows = parse_csv(b"name,email,phone,tags,plan\n'=A,a@x.test,'+14155552671,x;y,'-1\nB,bad,,,\n")
    rec = to_contact(rows[0])
    assert rec.data == {
        "name": "=A", "email": "a@x.test", "phone": "+14155552671", "attributes": {"plan": "-1"}, "tags": ["x", "y"],
    }  # fmt: skip
    with pytest.raises(RowRejected) as refused:
        to_contact(rows[1])
    assert refused.value.errors == [
        {"field": "email", "message": "Value error, An email address must have an @-sign."}
    ]

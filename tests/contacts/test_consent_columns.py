"""Consent in contact files: the importer's `*_consent` columns write the consent ledger (set-wise,
only what changes), the export carries each channel's state, and an export imports back as it was."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
from sqlalchemy import select

from server.consent import service as consent
from server.consent.models import Consent, ConsentSource, ConsentState
from server.contacts import export as contacts_export
from server.contacts.models import Contact
from tests.consent.support import ledger_rows

NUMBER_A = "+15550000001"


async def _import(app: Any, c: httpx.AsyncClient, body: bytes, *, mode: str = "upsert") -> dict[str, Any]:
    r = await c.post(
        f"/api/v1/contacts/import?mode={mode}", content=body, headers={"content-type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    await app.state.services.importer.wait()
    status: dict[str, Any] = (await c.get(f"/api/v1/contacts/import/{r.json()['job_id']}")).json()
    assert status["status"] == "done", status
    return status


async def _by_email(app: Any) -> dict[str, Contact]:
    async with app.state.services.db.sessions() as s:
        return {c.email: c for c in (await s.execute(select(Contact))).scalars()}


async def _current(app: Any, contact_id: int) -> dict[tuple[str, str], str]:
    async with app.state.services.db.sessions() as s:
        rows = await consent.current(s, workspace_id=await _workspace(app, contact_id), contact_id=contact_id)
        return {(r.channel, r.scope): r.state for r in rows}


async def _workspace(app: Any, contact_id: int) -> int:
    async with app.state.services.db.sessions() as s:
        return int(
            (await s.execute(select(Contact.workspace_id).where(Contact.id == contact_id))).scalar_one()
        )


async def _stop_at(app: Any, contact_id: int, scope: str) -> None:
    async with app.state.services.db.transaction() as s:
        await consent.record(
            s,
            workspace_id=await _workspace(app, contact_id),
            contact_id=contact_id,
            channel="sms",
            state=ConsentState.opted_out,
            source=ConsentSource.keyword,
            scope=scope,
        )


SPELLINGS = [
    ("opted_in", "opted_in"),
    (" YES ", "opted_in"),
    ("True", "opted_in"),
    ("1", "opted_in"),
    ("Subscribed", "opted_in"),
    ("OPTED_OUT", "opted_out"),
    ("no", "opted_out"),
    ("FALSE", "opted_out"),
    ("0", "opted_out"),
    ("unSubscribed", "opted_out"),
]


async def test_each_spelling_is_read_and_the_columns_never_become_attributes(
    app: Any, client: httpx.AsyncClient
) -> None:
    lines = ["name,email,email_consent,sms_consent,whatsapp_consent,city"]
    lines += [f"P{i},p{i}@x.test,{word},,{word},Paris" for i, (word, _) in enumerate(SPELLINGS)]
    lines.append("Nobody,nobody@x.test,,,,Rome")  # empty cells: no decision recorded
    status = await _import(app, client, "\n".join(lines).encode(), mode="create")
    assert (status["created"], status["rejected_count"]) == (len(SPELLINGS) + 1, 0)

    contacts = await _by_email(app)
    for i, (word, state) in enumerate(SPELLINGS):
        c = contacts[f"p{i}@x.test"]
        assert c.attributes == {"city": "Paris"}, word
        assert await _current(app, c.id) == {("email", "all"): state, ("whatsapp", "all"): state}, word
    assert await _current(app, contacts["nobody@x.test"].id) == {}
    assert contacts["nobody@x.test"].attributes == {"city": "Rome"}


async def test_a_bad_consent_value_rejects_its_row_with_the_line_and_column(
    app: Any, client: httpx.AsyncClient
) -> None:
    body = (
        b"name,email,sms_consent,email_consent\n"
        b"Ada,ada@x.test,yes,\n"
        b"Bob,bob@x.test,maybe,\n"
        b"Cy,not-an-email,,nope\n"
    )
    status = await _import(app, client, body)
    assert (status["created"], status["rejected_count"]) == (1, 2)
    [bob, cy] = status["rejected"]
    assert bob["row"] == 3
    assert [e["field"] for e in bob["errors"]] == ["sms_consent"]
    assert "opted_in or opted_out" in bob["errors"][0]["message"] and "'maybe'" in bob["errors"][0]["message"]
    assert cy["row"] == 4
    assert [e["field"] for e in cy["errors"]] == ["email", "email_consent"]  # every problem of the row
    assert set(await _by_email(app)) == {"ada@x.test"}
    assert await ledger_rows(app.state.services.db) == 1


async def test_entries_say_import_job_and_importer_and_a_repeated_import_adds_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    me = (await client.get("/api/v1/me")).json()
    body = (
        b"name,email,phone,email_consent,sms_consent\nAda,ada@x.test,,no,\nBob,bob@x.test,+14155550101,,yes\n"
    )
    first = await _import(app, client, body)
    db = app.state.services.db
    async with db.sessions() as s:
        rows = list((await s.execute(select(Consent).order_by(Consent.id))).scalars())
    assert [(r.channel, r.scope, r.state, r.source, r.actor_id, r.evidence) for r in rows] == [
        ("email", "all", "opted_out", "import", me["id"], {"import_job_id": first["job_id"], "line": 2}),
        ("sms", "all", "opted_in", "import", me["id"], {"import_job_id": first["job_id"], "line": 3}),
    ]
    await _import(app, client, body)
    await _import(app, client, body.upper())  # headers are read in any case
    assert await ledger_rows(db) == 2  # the same states again (in any spelling): no row

    # A state set by someone else is not recorded again either; a change is.
    ada = (await _by_email(app))["ada@x.test"]
    r = await client.post(f"/api/v1/contacts/{ada.id}/consent", json={"channel": "sms", "state": "opted_out"})
    assert r.status_code == 201
    await _import(app, client, b"email,sms_consent,email_consent\nada@x.test,no,yes\n")
    assert await _current(app, ada.id) == {("email", "all"): "opted_in", ("sms", "all"): "opted_out"}
    assert await ledger_rows(db) == 4  # the agent's opt-out, and the import's email opt-in


async def test_an_import_sees_a_stop_given_to_one_number_and_never_lifts_it(
    app: Any, client: httpx.AsyncClient
) -> None:
    await _import(app, client, b"name,email\nAda,ada@x.test\n")
    ada = (await _by_email(app))["ada@x.test"]
    await _stop_at(app, ada.id, NUMBER_A)
    await _import(app, client, b"email,sms_consent\nada@x.test,opted_out\n")
    assert await ledger_rows(app.state.services.db) == 1  # opted out already (at one number)
    # An old list saying "opted_in" does not re-subscribe someone who sent STOP (nor does it again).
    for _ in range(2):
        await _import(app, client, b"email,sms_consent\nada@x.test,opted_in\n")
        assert await _current(app, ada.id) == {("sms", NUMBER_A): "opted_out"}
        assert await ledger_rows(app.state.services.db) == 1


async def test_an_import_lifts_an_opt_out_the_business_recorded_but_not_the_contacts_own(
    app: Any, client: httpx.AsyncClient
) -> None:
    await _import(app, client, b"name,email\nAda,ada@x.test\n")
    ada = (await _by_email(app))["ada@x.test"]
    await _stop_at(app, ada.id, NUMBER_A)  # the contact's STOP to one number
    r = await client.post(f"/api/v1/contacts/{ada.id}/consent", json={"channel": "sms", "state": "opted_out"})
    assert r.status_code == 201  # an agent's opt-out for every number
    await _import(app, client, b"email,sms_consent\nada@x.test,opted_in\n")
    assert await _current(app, ada.id) == {("sms", NUMBER_A): "opted_out", ("sms", "all"): "opted_in"}


async def _consent_world(app: Any, client: httpx.AsyncClient) -> dict[str, int]:
    body = (
        b"name,email,phone,email_consent,sms_consent\n"
        b"Ada,ada@x.test,+14155550101,no,yes\n"
        b"Bob,bob@x.test,+14155550102,yes,\n"
        b"Cy,cy@x.test,,,\n"
    )
    await _import(app, client, body, mode="create")
    ids = {email: c.id for email, c in (await _by_email(app)).items()}
    await _stop_at(app, ids["bob@x.test"], NUMBER_A)  # a STOP to one number: out, for an export
    return ids


def _csv(r: httpx.Response) -> dict[str, dict[str, str]]:
    return {row["email"]: row for row in csv.DictReader(io.StringIO(r.text))}


async def test_exports_carry_each_channels_consent(app: Any, client: httpx.AsyncClient) -> None:
    await _consent_world(app, client)
    r = await client.get("/api/v1/contacts/export", params={"format": "csv"})
    assert r.status_code == 200
    got = {
        email: (row["email_consent"], row["sms_consent"], row["whatsapp_consent"])
        for email, row in _csv(r).items()
    }
    assert got == {
        "ada@x.test": ("opted_out", "opted_in", ""),
        "bob@x.test": ("opted_in", "opted_out", ""),
        "cy@x.test": ("", "", ""),
    }
    r = await client.get("/api/v1/contacts/export", params={"format": "ndjson"})
    items = {c["email"]: c for c in map(json.loads, r.text.splitlines())}
    assert items["ada@x.test"]["consent"] == {"email": "opted_out", "sms": "opted_in", "whatsapp": None}
    assert items["bob@x.test"]["consent"] == {"email": "opted_in", "sms": "opted_out", "whatsapp": None}
    assert items["cy@x.test"]["consent"] == {"email": None, "sms": None, "whatsapp": None}
    assert "email_consent" not in items["ada@x.test"]


async def test_consent_is_read_per_batch_of_the_export(app: Any, client: httpx.AsyncClient) -> None:
    ids = await _consent_world(app, client)
    ws = await _workspace(app, ids["ada@x.test"])
    fetch = contacts_export.batches(app.state.services.db, workspace_id=ws, q=None, tag=None)
    pages = [await fetch(None, 2)]
    pages.append(await fetch(pages[0][-1], 2))
    assert [len(p) for p in pages] == [2, 1]
    got = {r["email"]: (r["email_consent"], r["sms_consent"]) for p in pages for r in p}
    assert got == {
        "ada@x.test": ("opted_out", "opted_in"),
        "bob@x.test": ("opted_in", "opted_out"),
        "cy@x.test": (None, None),
    }


async def test_an_exported_csv_imports_back_with_the_same_consent_and_no_new_ledger_rows(
    app: Any, client: httpx.AsyncClient, make_client: Any
) -> None:
    await _consent_world(app, client)
    db = app.state.services.db
    exported = (await client.get("/api/v1/contacts/export", params={"format": "csv"})).text
    before = await ledger_rows(db)
    status = await _import(app, client, exported.encode())
    assert (status["created"], status["rejected_count"]) == (0, 0), status["rejected"]
    assert await ledger_rows(db) == before
    again = (await client.get("/api/v1/contacts/export", params={"format": "csv"})).text
    columns = ("email", "phone", "email_consent", "sms_consent", "whatsapp_consent")

    def consent_of(text: str) -> list[tuple[str, ...]]:
        return sorted(tuple(r[c] for c in columns) for r in csv.DictReader(io.StringIO(text)))

    assert consent_of(again) == consent_of(exported)

    # Into another workspace: the same contacts, with the same consent.
    other = await make_client("admin", workspace="Other")
    status = await _import(app, other, exported.encode())
    assert (status["created"], status["rejected_count"]) == (3, 0), status["rejected"]
    copied = (await other.get("/api/v1/contacts/export", params={"format": "csv"})).text
    assert consent_of(copied) == consent_of(exported)


async def test_an_exported_csv_imports_back_with_its_attributes_and_without_its_bookkeeping(
    app: Any, client: httpx.AsyncClient, make_client: Any
) -> None:
    """The export's `attributes` column (a JSON object) is read back as the attributes it holds;
    its `id`, `created_at` and `updated_at` are ours and not imported; another file's plain text
    `attributes` column stays one attribute."""
    r = await client.post(
        "/api/v1/contacts",
        json={"name": "Ada", "email": "ada@x.test", "attributes": {"plan": "pro", "seats": 5, "vip": True}},
    )
    assert r.status_code == 201, r.text
    exported = (await client.get("/api/v1/contacts/export", params={"format": "csv"})).text
    other = await make_client("admin", workspace="Elsewhere")
    status = await _import(app, other, exported.encode())
    assert (status["created"], status["rejected_count"]) == (1, 0), status["rejected"]
    [copied] = (await other.get("/api/v1/contacts")).json()["items"]
    assert copied["attributes"] == {"plan": "pro", "seats": 5, "vip": True}

    plain = b"name,email,attributes,id,crm_id\nBob,bob@x.test,likes tea,17,C-9\n"
    status = await _import(app, other, plain)
    assert (status["created"], status["rejected_count"]) == (1, 0), status["rejected"]
    bob = [c for c in (await other.get("/api/v1/contacts")).json()["items"] if c["email"] == "bob@x.test"]
    assert bob[0]["attributes"] == {"attributes": "likes tea", "crm_id": "C-9"}

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.contacts.importer import ImportRefused, parse_csv
from server.contacts.models import Contact
from server.events.models import Event
from tests.ui.conftest import BrowserFactory

CSV = (
    "name,email,phone,tags,plan\n"
    "Ada,ada@example.test,+44 20 7946 0958,vip;beta,pro\n"
    "Bad email,not-an-email,,,\n"
    "Grace,grace@example.test,,,free\n"
    "Dup,ADA@example.test,,,\n"
    "\n"
    "Bad phone,,12,,\n"
)


async def _wait(app: Any) -> None:
    await app.state.services.importer.wait()


async def test_import_keeps_good_rows_and_reports_bad_ones(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    r = await c.post("/api/v1/contacts/import", files={"file": ("people.csv", CSV.encode(), "text/csv")})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["total"] == 5
    await _wait(app)
    status = (await c.get(f"/api/v1/contacts/import/{job['job_id']}")).json()
    assert status["status"] == "done"
    assert (status["processed"], status["created"], status["rejected_count"]) == (5, 2, 3)
    assert [(x["row"], x["errors"][0]["field"]) for x in status["rejected"]] == [
        (3, "email"),
        (5, "email"),
        (7, "phone"),
    ]
    async with app.state.services.db.transaction() as s:
        rows = list((await s.execute(select(Contact).order_by(Contact.id))).scalars())
        events = list((await s.execute(select(Event).where(Event.type == "import.progress"))).scalars())
    assert [(x.name, x.tags, x.attributes) for x in rows] == [
        ("Ada", ["vip", "beta"], {"plan": "pro"}),
        ("Grace", [], {"plan": "free"}),
    ]
    assert rows[0].phone == "+442079460958"
    assert events[-1].data["done"] is True
    assert events[-1].data["created"] == 2
    assert sum(len(e.data["rejected"]) for e in events) == 3


async def test_import_in_batches_emits_progress_per_batch(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    app.state.services.importer.batch_size = 10
    body = "name,email\n" + "".join(f"P{i},p{i}@example.test\n" for i in range(35))
    r = await c.post("/api/v1/contacts/import", content=body, headers={"content-type": "text/csv"})
    assert r.status_code == 202
    await _wait(app)
    async with app.state.services.db.transaction() as s:
        events = list(
            (
                await s.execute(select(Event).where(Event.type == "import.progress").order_by(Event.id))
            ).scalars()
        )
    assert [e.data["processed"] for e in events] == [10, 20, 30, 35]
    assert [e.data["done"] for e in events] == [False, False, False, True]


async def test_import_refuses_what_is_not_a_contacts_csv(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent")
    r = await c.post("/api/v1/contacts/import", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "file"
    r = await c.post("/api/v1/contacts/import", json={"x": 1})
    assert r.status_code == 415
    viewer = await browser_client("viewer")
    r = await viewer.post(
        "/api/v1/contacts/import", content=b"name\nA\n", headers={"content-type": "text/csv"}
    )
    assert r.status_code == 403


async def test_import_status_is_private_to_the_workspace(app: Any, browser_client: BrowserFactory) -> None:
    c = await browser_client("agent", workspace="Acme")
    other = await browser_client("agent", workspace="Other")
    r = await c.post("/api/v1/contacts/import", content=b"name\nA\n", headers={"content-type": "text/csv"})
    await _wait(app)
    assert (await other.get(f"/api/v1/contacts/import/{r.json()['job_id']}")).status_code == 404


def test_parse_csv_numbers_rows_by_file_line_and_skips_blank_lines() -> None:
    rows = parse_csv('\ufeffName,EMAIL\nA,a@x.test\n\n"B, Jr",b@x.test\n'.encode())
    assert [(r.line, r.values) for r in rows] == [
        (2, {"name": "A", "email": "a@x.test"}),
        (4, {"name": "B, Jr", "email": "b@x.test"}),
    ]
    for bad in (b"", b"\xff\xfe", b"x,y\n1,2\n"):
        try:
            parse_csv(bad)
        except ImportRefused:
            continue
        raise AssertionError(f"{bad!r} was accepted")

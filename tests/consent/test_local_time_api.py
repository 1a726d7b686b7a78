"""Workspace settings, a contact's time zone at write, and campaigns at each recipient's local time."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select

from server.db import Database
from server.messages.models import Message
from tests.conftest import ClientFactory

UTC = dt.UTC


async def test_settings_read_with_defaults_and_replaced_by_an_admin(make_client: ClientFactory) -> None:
    admin, viewer = await make_client("admin"), await make_client("viewer")
    r = await viewer.get("/api/v1/workspace/settings")
    assert r.status_code == 200, r.text
    assert (r.json()["quiet_hours"], r.json()["timezone"]) == (None, "UTC")
    body = {
        "quiet_hours": {"start": "21:00", "end": "08:00", "days": ["sun", "mon", "sun"]},
        "timezone": "Europe/Paris",
    }
    assert (await viewer.put("/api/v1/workspace/settings", json=body)).status_code == 403
    r = await admin.put("/api/v1/workspace/settings", json=body)
    assert r.status_code == 200, r.text
    got = (await viewer.get("/api/v1/workspace/settings")).json()
    assert got["quiet_hours"] == {"start": "21:00", "end": "08:00", "days": ["mon", "sun"]}
    assert got["timezone"] == "Europe/Paris" and got["help_text"]


async def test_bad_settings_are_refused_with_the_field(client: httpx.AsyncClient) -> None:
    for body, field in [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "21:00", "end": "08:00", "days": ["someday"]}}, "quiet_hours"),
        ({"help_text": ""}, "help_text"),
    ]:
        r = await client.put("/api/v1/workspace/settings", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()


async def test_a_contact_timezone_must_be_an_iana_name(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/contacts", json={"name": "A", "attributes": {"timezone": "Atlantis/Capital"}}
    )
    assert r.status_code == 422, r.text
    r = await client.post("/api/v1/contacts", json={"name": "A", "attributes": {"timezone": "Asia/Tokyo"}})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = await client.patch(f"/api/v1/contacts/{cid}", json={"attributes": {"timezone": 7}})
    assert r.status_code == 422, r.text
    r = await client.patch(f"/api/v1/contacts/{cid}", json={"attributes": {"timezone": None}})
    assert r.status_code == 200, r.text  # removing it is fine


async def _wait_done(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            c = (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()
            if c["status"] != "expanding":
                return c
            await asyncio.sleep(0.05)


async def test_a_campaign_at_ten_local_time_gives_three_zones_three_send_times(
    client: httpx.AsyncClient, db: Database
) -> None:
    await client.put("/api/v1/workspace/settings", json={"timezone": "Europe/Paris"})
    people = {
        "tokyo": {"phone": "+819012345678", "attributes": {"timezone": "Asia/Tokyo"}},
        "new-york": {"phone": "+12125550100"},  # placed by its number
        "paris": {"phone": "+15555550100"},  # a number no region claims: the workspace default
    }
    ids = {}
    for name, fields in people.items():
        r = await client.post("/api/v1/contacts", json={"name": name, "tags": ["launch"], **fields})
        assert r.status_code == 201, r.text
        ids[r.json()["id"]] = name
    tpl = await client.post(
        "/api/v1/templates",
        json={
            "name": "Launch",
            "channel": "sms",
            "body": "We launch today, {{ name }}!",
            "category": "marketing",
        },
    )
    assert tpl.status_code == 201, tpl.text
    day = dt.date.today() + dt.timedelta(days=30)
    r = await client.post(
        "/api/v1/campaigns",
        json={
            "name": "Launch",
            "template_id": tpl.json()["id"],
            "audience": {"tag": "launch"},
            "send_at": f"{day.isoformat()}T00:00:00Z",
            "local_time": "10:00",
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["local_time"] == "10:00"
    await _wait_done(client, r.json()["id"])
    async with db.transaction() as s:
        rows = (await s.execute(select(Message).where(Message.campaign_id == r.json()["id"]))).scalars().all()
    got = {ids[m.contact_id]: m.send_at for m in rows}
    from zoneinfo import ZoneInfo

    def ten(zone: str) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(10), tzinfo=ZoneInfo(zone)).astimezone(UTC)

    assert got == {
        "tokyo": ten("Asia/Tokyo"),
        "new-york": ten("America/New_York"),
        "paris": ten("Europe/Paris"),
    }
    assert len(set(got.values())) == 3
    assert all(m.status == "scheduled" and m.next_attempt_at == m.send_at for m in rows)


async def test_local_time_must_be_hh_mm(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/campaigns",
        json={"name": "X", "template_id": 1, "audience": {"tag": "t"}, "local_time": "10am"},
    )
    assert r.status_code == 422, r.text

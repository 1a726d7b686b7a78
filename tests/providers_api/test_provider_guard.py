"""Provider connections point at public addresses only (unless SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS),
and re-pointing a connection requires its secrets again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.db import Database
from server.providers.models import Provider
from server.settings import Settings
from tests.conftest import make_settings
from tests.providers_api.test_providers_api import CHANNEL, PUBLIC, SECRETS


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url, allow_private_endpoints=False)


def _body(kind: str, **config: Any) -> dict[str, Any]:
    return {
        "name": f"{kind} main",
        "kind": kind,
        "channel": CHANNEL.get(kind, "email"),
        "config": {**PUBLIC.get(kind, {}), **SECRETS.get(kind, {}), **config},
    }


PRIVATE_ORIGINS = [
    "http://127.0.0.1:8080",
    "http://169.254.169.254",
    "http://[::1]:6379",
    "http://localhost:9",
]


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "twilio", "slack", "whatsapp"])
@pytest.mark.parametrize("origin", PRIVATE_ORIGINS)
async def test_a_base_url_at_a_private_address_answers_422_naming_it(
    client: httpx.AsyncClient, kind: str, origin: str
) -> None:
    r = await client.post("/api/v1/providers", json=_body(kind, base_url=origin))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["config.base_url"]
    assert "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("slack", {"webhook_url": "http://10.0.0.5/services/x"}, "config.webhook_url"),
        ("slack", {"webhook_url": "https://[64:ff9b::a9fe:a9fe]/x"}, "config.webhook_url"),  # NAT64
        ("smtp", {"host": "127.0.0.1"}, "config.host"),
        ("smtp", {"host": "[::ffff:10.1.2.3]"}, "config.host"),
        ("smtp", {"host": "localhost"}, "config.host"),
        ("sandbox", {"sink_url": "http://192.168.1.10/sink"}, "config.sink_url"),
    ],
)
async def test_every_destination_key_is_guarded(
    client: httpx.AsyncClient, kind: str, config: dict[str, Any], field: str
) -> None:
    r = await client.post("/api/v1/providers", json=_body(kind, **config))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_a_patch_to_a_private_address_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post("/api/v1/providers", json=_body("twilio", base_url="https://api.twilio.example"))
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await client.patch(
        f"/api/v1/providers/{pid}",
        json={"config": {"base_url": "http://169.254.169.254", "auth_token": "again"}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.base_url"
    async with db.transaction() as s:
        stored = (await s.execute(select(Provider).where(Provider.id == pid))).scalar_one()
    assert stored.config["base_url"] == "https://api.twilio.example"


async def test_private_addresses_are_accepted_when_the_operator_allows_them(
    make_client: Any, app: Any
) -> None:
    app.state.services.settings.allow_private_endpoints = True
    admin = await make_client("admin")
    r = await admin.post("/api/v1/providers", json=_body("sendgrid", base_url="http://127.0.0.1:8080"))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("sendgrid", {"base_url": "https://elsewhere.example"}),
        ("mailgun", {"domain": "mg.elsewhere.example"}),
        ("twilio", {"base_url": "https://elsewhere.example"}),
        ("whatsapp", {"base_url": "https://elsewhere.example"}),
        ("slack", {"base_url": "https://elsewhere.example"}),
        ("smtp", {"host": "smtp.elsewhere.example"}),
        ("smtp", {"port": 25}),
    ],
)
async def test_re_pointing_a_connection_requires_its_secrets_again(
    client: httpx.AsyncClient, db: Database, kind: str, change: dict[str, Any]
) -> None:
    r = await client.post("/api/v1/providers", json=_body(kind))
    assert r.status_code == 201, r.text
    pid = r.json()["id"]

    r = await client.patch(f"/api/v1/providers/{pid}", json={"config": change})
    assert r.status_code == 422, r.text
    assert sorted(e["field"] for e in r.json()["errors"]) == sorted(f"config.{k}" for k in SECRETS[kind])
    async with db.transaction() as s:
        stored = (await s.execute(select(Provider).where(Provider.id == pid))).scalar_one()
    for key, value in change.items():
        assert stored.config.get(key) != value  # nothing changed

    fresh = {k: f"{v}-new" if not v.startswith("https://") else v + "-new" for k, v in SECRETS[kind].items()}
    r = await client.patch(f"/api/v1/providers/{pid}", json={"config": {**change, **fresh}})
    assert r.status_code == 200, r.text
    async with db.transaction() as s:
        stored = (await s.execute(select(Provider).where(Provider.id == pid))).scalar_one()
    for key, value in fresh.items():
        assert stored.config[key] == value


async def test_a_change_that_does_not_re_point_keeps_the_secrets(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/providers", json=_body("sendgrid", base_url="https://api.sendgrid.com"))
    pid = r.json()["id"]
    for change in ({"from_email": "other@example.test"}, {"base_url": "HTTPS://API.SENDGRID.COM/"}):
        r = await client.patch(f"/api/v1/providers/{pid}", json={"config": change})
        assert r.status_code == 200, r.text
        assert r.json()["secrets_set"] == ["api_key"]

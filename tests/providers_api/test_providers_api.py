from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.db import Database
from server.providers.models import Provider
from tests.conftest import ClientFactory

SECRETS = {
    "sendgrid": {"api_key": "SG.secret-api-key-1"},
    "mailgun": {"api_key": "key-secret-mailgun", "webhook_signing_key": "mg-signing-secret"},
    "twilio": {"auth_token": "twilio-auth-secret"},
    "smtp": {"password": "smtp-password-secret"},
    "slack": {"webhook_url": "https://hooks.slack.com/services/T0/B0/secretpath"},
    "whatsapp": {"access_token": "EAAG-secret", "app_secret": "wa-app-secret", "verify_token": "wa-verify"},
}
PUBLIC = {
    "sendgrid": {"from_email": "news@example.test"},
    "mailgun": {"domain": "mg.example.test", "from_email": "news@example.test"},
    "twilio": {"account_sid": "AC" + "0" * 32, "from_number": "+15005550006"},
    "smtp": {"host": "smtp.example.test", "port": 2525, "username": "u", "from_email": "a@example.test"},
    "slack": {},
    "whatsapp": {"phone_number_id": "1234567890"},
}
CHANNEL = {"sendgrid": "email", "mailgun": "email", "twilio": "sms", "smtp": "email", "slack": "chat"}
CHANNEL["whatsapp"] = "whatsapp"


def _assert_no_secret(payload: Any, kind: str) -> None:
    text = str(payload)
    for value in SECRETS[kind].values():
        assert value not in text, f"secret {value!r} leaked in {text}"


async def _provider(client: httpx.AsyncClient, kind: str = "mailgun", **fields: Any) -> httpx.Response:
    body = {
        "name": f"{kind} main",
        "kind": kind,
        "channel": CHANNEL[kind],
        "priority": 10,
        "config": {**PUBLIC[kind], **SECRETS[kind]},
        "send_rate": 50,
    }
    body.update(fields)
    return await client.post("/api/v1/providers", json=body)


@pytest.mark.parametrize("kind", sorted(SECRETS))
async def test_secrets_never_in_post_get_patch_or_list(
    client: httpx.AsyncClient, db: Database, kind: str
) -> None:
    r = await _provider(client, kind)
    assert r.status_code == 201, r.text
    created = r.json()
    _assert_no_secret(created, kind)
    assert created["secrets_set"] == sorted(SECRETS[kind])
    assert created["webhook_url"] == f"http://testserver/webhooks/{created['id']}"
    for key, value in PUBLIC[kind].items():
        assert created["config"][key] == value
    pid = created["id"]

    got = await client.get(f"/api/v1/providers/{pid}")
    _assert_no_secret(got.json(), kind)
    listed = await client.get("/api/v1/providers")
    _assert_no_secret(listed.json(), kind)
    assert [p["id"] for p in listed.json()["items"]] == [pid]

    # A PATCH that does not resend the secrets keeps them (merge), and answers without them.
    r = await client.patch(f"/api/v1/providers/{pid}", json={"priority": 5, "config": {}})
    assert r.status_code == 200, r.text
    _assert_no_secret(r.json(), kind)
    assert r.json()["priority"] == 5
    async with db.transaction() as s:
        stored = (await s.execute(select(Provider).where(Provider.id == pid))).scalar_one()
    for key, value in SECRETS[kind].items():
        assert stored.config[key] == value
    assert len(stored.webhook_key) == 64

    # A replaced secret is stored, and still never shown.
    key = sorted(SECRETS[kind])[0]
    rotated = "https://hooks.slack.test/rotated-secret-value" if kind == "slack" else "rotated-secret-value"
    r = await client.patch(f"/api/v1/providers/{pid}", json={"config": {key: rotated}})
    assert r.status_code == 200
    assert "rotated-secret-value" not in r.text
    async with db.transaction() as s:
        stored = (await s.execute(select(Provider).where(Provider.id == pid))).scalar_one()
    assert stored.config[key] == rotated

    # Errors do not echo them either.
    r = await client.patch(f"/api/v1/providers/{pid}", json={"config": {"base_url": "not a url"}})
    assert r.status_code == 422
    _assert_no_secret(r.json(), kind)
    assert "rotated-secret-value" not in r.text


async def test_config_is_validated_by_the_kind(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/providers",
        json={
            "name": "tw",
            "kind": "twilio",
            "channel": "email",
            "config": {"account_sid": "nope", "color": 1},
        },
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {
        "channel",
        "config.account_sid",
        "config.auth_token",
        "config.from_number",
        "config.color",
    } <= fields
    r = await client.post(
        "/api/v1/providers", json={"name": "x", "kind": "pigeon", "channel": "email", "config": {}}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "kind"


async def test_patch_can_remove_a_key_and_change_channel_only_if_supported(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/providers",
        json={"name": "sbx", "kind": "sandbox", "channel": "email", "config": {"bounce_rate": 0.5}},
    )
    assert r.status_code == 201
    pid = r.json()["id"]
    assert r.json()["config"]["bounce_rate"] == 0.5
    r = await client.patch(
        f"/api/v1/providers/{pid}", json={"channel": "sms", "config": {"bounce_rate": None}}
    )
    assert r.status_code == 200
    assert r.json()["channel"] == "sms" and r.json()["config"]["bounce_rate"] == 0.0
    r = await _provider(client, "twilio")
    r = await client.patch(f"/api/v1/providers/{r.json()['id']}", json={"channel": "email"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "channel"
    r = await client.patch(f"/api/v1/providers/{pid}", json={"send_rate": None, "enabled": False})
    assert r.json()["send_rate"] is None and r.json()["enabled"] is False


async def test_webhook_url_uses_public_url_when_set(make_client: ClientFactory, app: Any) -> None:
    app.state.services.settings.public_url = "https://sb.example.test/"
    client = await make_client("admin")
    r = await _provider(client, "sendgrid")
    assert r.json()["webhook_url"] == f"https://sb.example.test/webhooks/{r.json()['id']}"


async def test_admin_only_even_for_reads(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    pid = (await _provider(admin)).json()["id"]
    for role in ("agent", "viewer"):
        c = await make_client(role)
        assert (await c.get("/api/v1/providers")).status_code == 403
        assert (await c.get(f"/api/v1/providers/{pid}")).status_code == 403
        assert (await _provider(c)).status_code == 403
        assert (await c.patch(f"/api/v1/providers/{pid}", json={"priority": 1})).status_code == 403
        assert (await c.delete(f"/api/v1/providers/{pid}")).status_code == 403
    assert (await admin.delete(f"/api/v1/providers/{pid}")).status_code == 204
    assert (await admin.get(f"/api/v1/providers/{pid}")).status_code == 404


async def test_other_workspace_gets_404_everywhere(make_client: ClientFactory) -> None:
    acme = await make_client("admin", workspace="Acme")
    other = await make_client("admin", workspace="Other")
    pid = (await _provider(acme)).json()["id"]
    url = f"/api/v1/providers/{pid}"
    assert (await other.get(url)).status_code == 404
    assert (await other.patch(url, json={"priority": 1})).status_code == 404
    assert (await other.delete(url)).status_code == 404
    assert (await other.get("/api/v1/providers")).json()["items"] == []
    assert (await acme.get(url)).json()["priority"] == 10

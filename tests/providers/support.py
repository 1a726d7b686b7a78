"""Working configs and messages for the adapter tests."""

from __future__ import annotations

from typing import Any

import httpx

from server.providers.adapters import Adapter, OutgoingMessage, get_adapter_class
from tests.providers.fakes import FakeMailgun, FakeSendGrid, FakeSlack, FakeTwilio, FakeWhatsApp

WEBHOOK_URL = "https://switchboard.example.test/webhooks/7"
WEBHOOK_KEY = "whk-test-key"


def good_config(kind: str, origin: str) -> dict[str, Any]:
    """A config the fake for `kind`, served at `origin`, accepts."""
    configs: dict[str, dict[str, Any]] = {
        "sendgrid": {"api_key": FakeSendGrid.api_key, "from_email": "team@example.test", "base_url": origin},
        "mailgun": {
            "api_key": FakeMailgun.api_key,
            "domain": FakeMailgun.domain,
            "from_email": "team@mg.example.test",
            "base_url": origin,
        },
        "twilio": {
            "account_sid": FakeTwilio.account_sid,
            "auth_token": FakeTwilio.auth_token,
            "from_number": "+15550001111",
            "base_url": origin,
        },
        "slack": {
            "webhook_url": f"https://hooks.slack.com/services/T0001/B0001/{FakeSlack.secret}",
            "base_url": origin,
        },
        "whatsapp": {
            "access_token": FakeWhatsApp.access_token,
            "phone_number_id": FakeWhatsApp.phone_number_id,
            "app_secret": "app-secret",
            "verify_token": "verify-me",
            "base_url": origin,
        },
    }
    return configs[kind]


# A recipient each fake accepts, by kind.
RECIPIENTS = {
    "sendgrid": "ada@example.test",
    "mailgun": "ada@example.test",
    "twilio": "+15551234567",
    "slack": "",
    "whatsapp": "+15551234567",
    "smtp": "ada@example.test",
    "sandbox": "ada@example.test",
}
CHANNELS = {"sendgrid": "email", "mailgun": "email", "twilio": "sms", "slack": "chat", "whatsapp": "whatsapp"}


def message(kind: str, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "message_id": 42,
        "workspace_id": 3,
        "channel": CHANNELS.get(kind, "email"),
        "to": RECIPIENTS[kind],
        "subject": "Your order shipped",
        "body": "Hello Ada, your order #1001 is on its way.",
        "idempotency_key": "sb-3-42",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def adapter(
    kind: str, config: dict[str, Any], http: httpx.AsyncClient, *, allow_private: bool = True
) -> Adapter:
    """The fakes listen on 127.0.0.1, so private addresses are allowed unless a test says not."""
    return get_adapter_class(kind)(
        config,
        http=http,
        provider_id=7,
        webhook_url=WEBHOOK_URL,
        webhook_key=WEBHOOK_KEY,
        allow_private=allow_private,
    )

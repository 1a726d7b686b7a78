from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.providers.adapters import ConfigError, PermanentError
from server.providers.adapters.sendgrid import SendGridAdapter
from tests.providers.fakes import FakeProvider, FakeSendGrid
from tests.providers.support import adapter, good_config, message

ServerFactory = Callable[[str], tuple[FakeProvider, str]]


async def test_send_posts_v3_mail_send_as_documented(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("sendgrid")
    result = await adapter("sendgrid", good_config("sendgrid", origin), http).send(
        message("sendgrid", from_name="Acme Support")
    )

    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", "/v3/mail/send")
    assert seen.headers["authorization"] == f"Bearer {FakeSendGrid.api_key}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json == {
        "personalizations": [{"to": [{"email": "ada@example.test"}]}],
        "from": {"email": "team@example.test", "name": "Acme Support"},
        "subject": "Your order shipped",
        "content": [{"type": "text/plain", "value": "Hello Ada, your order #1001 is on its way."}],
        "custom_args": {"sb_message_id": "42", "sb_workspace_id": "3"},
    }
    assert result.provider_message_id == fake.issued[0]


async def test_rejected_recipient_fails_permanently_with_sendgrids_reason(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    _, origin = provider_server("sendgrid")
    with pytest.raises(PermanentError) as failed:
        await adapter("sendgrid", good_config("sendgrid", origin), http).send(
            message("sendgrid", to="not-an-address")
        )
    assert failed.value.status == 400
    assert failed.value.reason == "personalizations.0.to.0.email: Does not contain a valid address."


def _p256_der_b64() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode(), pem.decode()


def test_webhook_public_key_accepts_p256_as_base64_der_or_pem() -> None:
    for key in _p256_der_b64():
        config = SendGridAdapter.validate_config(
            good_config("sendgrid", "http://x.test") | {"webhook_public_key": key}
        )
        assert config["webhook_public_key"] == key.strip()


@pytest.mark.parametrize(
    "key",
    [
        "not base64 !",
        base64.b64encode(b"garbage").decode(),
        base64.b64encode(
            ec.generate_private_key(ec.SECP384R1())
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
    ],
)
def test_webhook_public_key_must_be_p256(key: str) -> None:
    with pytest.raises(ConfigError) as invalid:
        SendGridAdapter.validate_config(
            good_config("sendgrid", "http://x.test") | {"webhook_public_key": key}
        )
    assert [e["field"] for e in invalid.value.errors] == ["config.webhook_public_key"]


def test_from_email_is_checked_for_syntax_only() -> None:
    config = good_config("sendgrid", "http://x.test")
    assert (
        SendGridAdapter.validate_config(config | {"from_email": "a@b.invalid"})["from_email"] == "a@b.invalid"
    )
    with pytest.raises(ConfigError, match=r"config\.from_email"):
        SendGridAdapter.validate_config(config | {"from_email": "nobody"})

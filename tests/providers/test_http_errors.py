"""Behaviour every HTTP adapter shares: how failures are classified, and config checks."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from server.providers.adapters import ConfigError, PermanentError, TransientError, get_adapter_class
from tests.providers.fakes import FakeProvider
from tests.providers.support import adapter, good_config, message

HTTP_KINDS = ["sendgrid", "mailgun", "twilio", "slack", "whatsapp"]
ServerFactory = Callable[[str], tuple[FakeProvider, str]]

# The provider's own words for bad credentials, as its fake answers them.
BAD_CREDENTIALS = {
    "sendgrid": (
        {"api_key": "SG.revoked"},
        "The provided authorization grant is invalid, expired, or revoked",
        None,
    ),
    "mailgun": ({"api_key": "key-wrong"}, "Forbidden", None),
    "twilio": ({"auth_token": "wrong"}, "Authenticate", "20003"),
    "slack": ({"webhook_url": "https://hooks.slack.com/services/T0001/B0001/revoked"}, "no_service", None),
    "whatsapp": (
        {"access_token": "expired"},
        "Invalid OAuth access token - Cannot parse access token",
        "190",
    ),
}


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_bad_credentials_fail_permanently_with_the_providers_reason(
    kind: str, provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server(kind)
    override, reason, code = BAD_CREDENTIALS[kind]
    sender = adapter(kind, good_config(kind, origin) | override, http)
    with pytest.raises(PermanentError) as failed:
        await sender.send(message(kind))
    assert failed.value.reason == reason
    assert failed.value.code == code
    assert failed.value.status in (401, 404)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_server_error_is_transient(
    kind: str, provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server(kind)
    fake.mode = "server_error"
    with pytest.raises(TransientError) as failed:
        await adapter(kind, good_config(kind, origin), http).send(message(kind))
    assert failed.value.status == 500
    assert failed.value.reason  # the provider's message, not an empty string


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_rate_limit_is_transient_and_honours_retry_after(
    kind: str, provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server(kind)
    fake.mode = "rate_limited"
    with pytest.raises(TransientError) as failed:
        await adapter(kind, good_config(kind, origin), http).send(message(kind))
    assert failed.value.retry_after == fake.retry_after


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_timeout_is_transient(kind: str, provider_server: ServerFactory) -> None:
    fake, origin = provider_server(kind)
    fake.mode = "slow"  # answers after 0.5 s
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2)) as impatient:
        with pytest.raises(TransientError, match="timed out"):
            await adapter(kind, good_config(kind, origin), impatient).send(message(kind))


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_unreachable_provider_is_transient(kind: str, http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(TransientError, match="cannot reach"):
        await adapter(kind, good_config(kind, origin), http).send(message(kind))


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9/v3",
        "ftp://api.example.test",
        "api.example.test",
        "https://user:pw@api.example.test",
        "https://api.example.test?x=1",
        "https://api.example.test:99999",
    ],
)
def test_base_url_must_be_an_origin(kind: str, base_url: str) -> None:
    with pytest.raises(ConfigError) as invalid:
        get_adapter_class(kind).validate_config(good_config(kind, "http://x.test") | {"base_url": base_url})
    assert [e["field"] for e in invalid.value.errors] == ["config.base_url"]


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_base_url_is_normalised(kind: str) -> None:
    config = get_adapter_class(kind).validate_config(good_config(kind, "HTTP://LocalHost:8025/"))
    assert config["base_url"] == "http://localhost:8025"


@pytest.mark.parametrize(
    ("kind", "default"),
    [
        ("sendgrid", "https://api.sendgrid.com"),
        ("mailgun", "https://api.mailgun.net"),
        ("twilio", "https://api.twilio.com"),
        ("whatsapp", "https://graph.facebook.com"),
    ],
)
def test_base_url_defaults_to_the_public_api(kind: str, default: str) -> None:
    config = good_config(kind, "unused")
    del config["base_url"]
    assert get_adapter_class(kind).validate_config(config)["base_url"] == default


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_every_missing_required_key_is_reported(kind: str) -> None:
    cls = get_adapter_class(kind)
    config = {k: v for k, v in good_config(kind, "http://x.test").items() if k not in cls.required_keys}
    with pytest.raises(ConfigError) as invalid:
        cls.validate_config(config)
    assert sorted(e["field"] for e in invalid.value.errors) == sorted(
        f"config.{k}" for k in cls.required_keys
    )
    assert {e["message"] for e in invalid.value.errors} == {"is required"}


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_unknown_keys_and_wrong_types_are_rejected(kind: str) -> None:
    cls = get_adapter_class(kind)
    key = sorted(cls.required_keys)[0]
    config = good_config(kind, "http://x.test") | {"apikey": "typo", key: 12}
    with pytest.raises(ConfigError) as invalid:
        cls.validate_config(config)
    assert {e["field"]: e["message"] for e in invalid.value.errors} == {
        f"config.{key}": "must be a string",
        "config.apikey": "is not a known setting for this provider kind",
    }


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_public_config_hides_every_secret(kind: str) -> None:
    cls = get_adapter_class(kind)
    config = cls.validate_config(good_config(kind, "http://x.test"))
    public = cls.public_config(config)
    assert cls.secret_keys and not cls.secret_keys & public.keys()
    assert public["base_url"] == "http://x.test"

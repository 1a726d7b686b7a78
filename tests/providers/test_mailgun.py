from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from server.providers.adapters import ConfigError, PermanentError
from server.providers.adapters.mailgun import MailgunAdapter
from tests.providers.fakes import FakeMailgun, FakeProvider
from tests.providers.support import adapter, good_config, message

ServerFactory = Callable[[str], tuple[FakeProvider, str]]


async def test_send_posts_the_messages_form_with_basic_auth(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("mailgun")
    result = await adapter("mailgun", good_config("mailgun", origin), http).send(
        message("mailgun", from_name="Acme Support")
    )

    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", f"/v3/{FakeMailgun.domain}/messages")
    assert httpx.BasicAuth("api", FakeMailgun.api_key)._auth_header == seen.headers["authorization"]
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form == {
        "from": "Acme Support <team@mg.example.test>",
        "to": "ada@example.test",
        "subject": "Your order shipped",
        "text": "Hello Ada, your order #1001 is on its way.",
        "v:sb_message_id": "42",
        "v:sb_workspace_id": "3",
    }
    assert result.provider_message_id == fake.issued[0]
    assert result.provider_message_id.startswith("<") and result.provider_message_id.endswith(
        f"@{FakeMailgun.domain}>"
    )


async def test_invalid_recipient_fails_permanently_with_mailguns_message(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    _, origin = provider_server("mailgun")
    with pytest.raises(PermanentError) as failed:
        await adapter("mailgun", good_config("mailgun", origin), http).send(message("mailgun", to="nobody"))
    assert failed.value.status == 400
    assert failed.value.reason == "to parameter is not a valid address. please check documentation"


async def test_unknown_domain_is_permanent(provider_server: ServerFactory, http: httpx.AsyncClient) -> None:
    _, origin = provider_server("mailgun")
    config = good_config("mailgun", origin) | {"domain": "other.example.test"}
    with pytest.raises(PermanentError, match=r"Domain not found: other\.example\.test"):
        await adapter("mailgun", config, http).send(message("mailgun"))


@pytest.mark.parametrize("domain", ["mg", "mg.example.test/v3", "-x.example.test", "a b.test"])
def test_domain_must_be_a_domain_name(domain: str) -> None:
    with pytest.raises(ConfigError) as invalid:
        MailgunAdapter.validate_config(good_config("mailgun", "http://x.test") | {"domain": domain})
    assert [e["field"] for e in invalid.value.errors] == ["config.domain"]

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from server.providers.adapters import ConfigError, PermanentError
from server.providers.adapters.slack import SlackAdapter
from tests.providers.fakes import FakeProvider, FakeSlack
from tests.providers.support import adapter, good_config, message

ServerFactory = Callable[[str], tuple[FakeProvider, str]]


async def test_send_posts_text_to_the_incoming_webhook(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("slack")
    result = await adapter("slack", good_config("slack", origin), http).send(message("slack"))

    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", f"/services/T0001/B0001/{FakeSlack.secret}")
    assert seen.headers["content-type"] == "application/json"
    assert seen.json == {"text": "*Your order shipped*\nHello Ada, your order #1001 is on its way."}
    # Slack gives no id: ours stands in for it.
    assert result.provider_message_id == "sb-3-42"


async def test_without_base_url_the_webhook_url_is_used_as_is(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("slack")
    config = {"webhook_url": f"{origin}/services/T0001/B0001/{FakeSlack.secret}"}
    await adapter("slack", config, http).send(message("slack", subject=""))
    assert fake.requests[0].json == {"text": "Hello Ada, your order #1001 is on its way."}


async def test_slack_error_word_is_the_reason(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    _, origin = provider_server("slack")
    with pytest.raises(PermanentError) as failed:
        await adapter("slack", good_config("slack", origin), http).send(message("slack", subject="", body=""))
    assert (failed.value.status, failed.value.reason) == (400, "no_text")


@pytest.mark.parametrize("url", ["hooks.slack.com/services/x", "ftp://hooks.slack.com/x", ""])
def test_webhook_url_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ConfigError) as invalid:
        SlackAdapter.validate_config({"webhook_url": url})
    assert [e["field"] for e in invalid.value.errors] == ["config.webhook_url"]

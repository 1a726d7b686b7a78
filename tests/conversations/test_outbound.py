"""Outbound email carries a signed Reply-To and its own Message-ID; replies go out from the
number or address the customer wrote to (adapters against the fake providers)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from server.conversations.threading import message_of_token, reply_token
from tests.providers.fakes import FakeProvider
from tests.providers.support import adapter, good_config, message

ServerFactory = Callable[[str], tuple[FakeProvider, str]]
SECRET = "s" * 40


async def test_mailgun_email_carries_the_reply_address_and_our_message_id(
    provider_server: ServerFactory,
    http: httpx.AsyncClient,
) -> None:
    fake, origin = provider_server("mailgun")
    config = good_config("mailgun", origin) | {"inbound_domain": "in.example.test"}
    token = reply_token(SECRET, 3, 42)
    await adapter("mailgun", config, http).send(message("mailgun", reply_token=token))
    (seen,) = fake.requests
    assert seen.form["h:Reply-To"] == f"reply+{token}@in.example.test"
    assert seen.form["h:Message-ID"].startswith("<sb-3-42@")
    assert message_of_token(SECRET, 3, token) == 42
    assert message_of_token(SECRET, 4, token) is None  # another workspace's token is not ours


async def test_without_an_inbound_domain_no_reply_address_is_added(
    provider_server: ServerFactory,
    http: httpx.AsyncClient,
) -> None:
    fake, origin = provider_server("mailgun")
    await adapter("mailgun", good_config("mailgun", origin), http).send(
        message("mailgun", reply_token="42.abc")
    )
    assert "h:Reply-To" not in fake.requests[0].form


async def test_twilio_reply_goes_out_from_the_number_written_to(
    provider_server: ServerFactory,
    http: httpx.AsyncClient,
) -> None:
    fake, origin = provider_server("twilio")
    await adapter("twilio", good_config("twilio", origin), http).send(
        message("twilio", from_address="+15557770000")
    )
    assert fake.requests[0].form["From"] == "+15557770000"

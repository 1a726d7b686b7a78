"""RFC 2369 `List-Unsubscribe` and RFC 8058 `List-Unsubscribe-Post` through every email adapter:
SMTP checked on the message a real aiosmtpd server receives, SendGrid and Mailgun on the requests
their local fakes receive."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import httpx

from server.providers.adapters.base import unsubscribe_headers
from tests.providers import test_smtp
from tests.providers.fakes import FakeProvider
from tests.providers.support import adapter, good_config, message
from tests.providers.test_smtp import Inbox, smtp_config

inbox = test_smtp.inbox  # the aiosmtpd server fixture
ServerFactory = Callable[[str], tuple[FakeProvider, str]]
LINK = "https://switchboard.example.test/u/eyJ0b2tlbiI.c2lnbmF0dXJl"
ONE_CLICK = "List-Unsubscribe=One-Click"


async def test_smtp_marketing_email_carries_both_headers(
    inbox: tuple[Inbox, int], http: httpx.AsyncClient
) -> None:
    handler, port = inbox
    sender = adapter("smtp", smtp_config(port), http)
    await sender.send(message("smtp", unsubscribe_url=LINK))
    await sender.send(message("smtp"))  # transactional: no link, no headers

    marketing, receipt = (
        email.message_from_bytes(e.content, policy=email.policy.default)  # type: ignore[arg-type]
        for e in handler.envelopes
    )
    assert marketing["List-Unsubscribe"] == f"<{LINK}>"
    assert marketing["List-Unsubscribe-Post"] == ONE_CLICK
    assert receipt["List-Unsubscribe"] is None and receipt["List-Unsubscribe-Post"] is None


async def test_sendgrid_marketing_email_carries_both_headers(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("sendgrid")
    sender = adapter("sendgrid", good_config("sendgrid", origin), http)
    await sender.send(message("sendgrid", unsubscribe_url=LINK))
    await sender.send(message("sendgrid"))

    marketing, receipt = fake.requests
    assert marketing.json is not None and receipt.json is not None
    assert marketing.json["headers"] == {"List-Unsubscribe": f"<{LINK}>", "List-Unsubscribe-Post": ONE_CLICK}
    assert "headers" not in receipt.json


async def test_mailgun_marketing_email_carries_both_headers(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("mailgun")
    sender = adapter("mailgun", good_config("mailgun", origin), http)
    await sender.send(message("mailgun", unsubscribe_url=LINK))
    await sender.send(message("mailgun"))

    marketing, receipt = fake.requests
    assert marketing.form["h:List-Unsubscribe"] == f"<{LINK}>"
    assert marketing.form["h:List-Unsubscribe-Post"] == ONE_CLICK
    assert not any(k.startswith("h:List-") for k in receipt.form)


def test_a_mailto_follows_the_link_when_the_connection_has_an_inbound_domain() -> None:
    msg = message("smtp", unsubscribe_url=LINK)
    token = LINK.rpartition("/u/")[2]
    assert unsubscribe_headers({"inbound_domain": "in.example.test"}, msg) == {
        "List-Unsubscribe": f"<{LINK}>, <mailto:unsubscribe+{token}@in.example.test>",
        "List-Unsubscribe-Post": ONE_CLICK,
    }
    assert unsubscribe_headers({}, msg)["List-Unsubscribe"] == f"<{LINK}>"
    assert unsubscribe_headers({"inbound_domain": "in.example.test"}, message("smtp")) == {}

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from server.providers.adapters import ConfigError, PermanentError
from server.providers.adapters.twilio import TwilioAdapter
from tests.providers.fakes import FakeProvider, FakeTwilio
from tests.providers.support import WEBHOOK_URL, adapter, good_config, message

ServerFactory = Callable[[str], tuple[FakeProvider, str]]


async def test_send_creates_a_message_resource(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    result = await adapter("twilio", good_config("twilio", origin), http).send(message("twilio"))

    (seen,) = fake.requests
    assert (seen.method, seen.path) == (
        "POST",
        f"/2010-04-01/Accounts/{FakeTwilio.account_sid}/Messages.json",
    )
    assert (
        seen.headers["authorization"]
        == httpx.BasicAuth(FakeTwilio.account_sid, FakeTwilio.auth_token)._auth_header
    )
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form == {
        "To": "+15551234567",
        "From": "+15550001111",
        "Body": "Hello Ada, your order #1001 is on its way.",
        "StatusCallback": f"{WEBHOOK_URL}?sb_message_id=42",
    }
    assert result.provider_message_id == fake.issued[0]
    assert result.provider_message_id.startswith("SM")


async def test_messaging_service_sid_is_sent_instead_of_from(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    service = "MG" + "ab" * 16
    await adapter("twilio", good_config("twilio", origin) | {"from_number": service}, http).send(
        message("twilio")
    )
    assert fake.requests[0].form["MessagingServiceSid"] == service
    assert "From" not in fake.requests[0].form


async def test_invalid_number_fails_permanently_with_twilios_code(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    _, origin = provider_server("twilio")
    with pytest.raises(PermanentError) as failed:
        await adapter("twilio", good_config("twilio", origin), http).send(message("twilio", to="555-0100"))
    assert (failed.value.status, failed.value.code) == (400, "21211")
    assert failed.value.reason == "Invalid 'To' Phone Number: 555-0100"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("account_sid", "SK" + "0" * 32),
        ("account_sid", "AC123"),
        ("from_number", "5550001111"),
        ("from_number", "+0123"),
    ],
)
def test_sid_and_sender_formats_are_checked(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as invalid:
        TwilioAdapter.validate_config(good_config("twilio", "http://x.test") | {key: value})
    assert [e["field"] for e in invalid.value.errors] == [f"config.{key}"]


async def test_no_status_callback_without_a_webhook_url(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    sender = TwilioAdapter(
        good_config("twilio", origin), http=http, provider_id=7, webhook_url="", webhook_key="k"
    )
    await sender.send(message("twilio"))
    assert "StatusCallback" not in fake.requests[0].form


async def test_whatsapp_goes_from_and_to_whatsapp_addresses_with_a_free_form_body(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    twilio = adapter("twilio", good_config("twilio", origin), http)
    await twilio.send(message("twilio", channel="whatsapp"))
    # A reply goes out from the number the customer wrote to.
    await twilio.send(message("twilio", channel="whatsapp", from_address="+15550002222"))
    first, reply = (r.form for r in fake.requests)
    assert first == {
        "To": "whatsapp:+15551234567",
        "From": "whatsapp:+15550001111",
        "Body": "Hello Ada, your order #1001 is on its way.",
        "StatusCallback": f"{WEBHOOK_URL}?sb_message_id=42",
    }
    assert (reply["From"], reply["To"]) == ("whatsapp:+15550002222", "whatsapp:+15551234567")
    assert twilio.sender(message("twilio", channel="whatsapp")) == "+15550001111"  # consent's scope


async def test_whatsapp_through_a_messaging_service_prefixes_the_recipient_only(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    service = "MG" + "ab" * 16
    await adapter("twilio", good_config("twilio", origin) | {"from_number": service}, http).send(
        message("twilio", channel="whatsapp")
    )
    form = fake.requests[0].form
    assert (form["To"], form["MessagingServiceSid"]) == ("whatsapp:+15551234567", service)
    assert "From" not in form


async def test_a_whatsapp_template_goes_as_its_content_sid_and_numbered_variables(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    sid = "HX" + "0f" * 16
    template = {
        "name": "order_update",  # the Cloud API's; Twilio goes by the SID
        "language": "en_US",
        "content_sid": sid,
        "parameters": ["Ada", '#1001 "fragile"'],
        "header": {"type": "text", "parameter": "Ada"},
    }
    result = await adapter("twilio", good_config("twilio", origin), http).send(
        message("twilio", channel="whatsapp", template=template)
    )
    form = fake.requests[0].form
    assert form["ContentSid"] == sid
    assert orjson.loads(form["ContentVariables"]) == {"1": "Ada", "2": '#1001 "fragile"'}
    assert "Body" not in form and form["From"] == "whatsapp:+15550001111"
    assert result.provider_message_id == fake.issued[0]
    # Without parameters there are no variables to send.
    await adapter("twilio", good_config("twilio", origin), http).send(
        message("twilio", channel="whatsapp", template={"content_sid": sid, "parameters": []})
    )
    assert "ContentVariables" not in fake.requests[1].form


async def test_a_whatsapp_template_without_a_content_sid_fails_without_a_request(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("twilio")
    with pytest.raises(PermanentError, match="no content_sid"):
        await adapter("twilio", good_config("twilio", origin), http).send(
            message(
                "twilio",
                channel="whatsapp",
                template={"name": "order_update", "language": "en_US", "parameters": ["Ada", "#1"]},
            )
        )
    assert fake.requests == []

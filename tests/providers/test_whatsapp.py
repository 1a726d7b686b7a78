from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.providers.adapters import PermanentError, TransientError
from tests.providers.fakes import FakeProvider, FakeWhatsApp, SentTemplate
from tests.providers.support import adapter, good_config, message

ServerFactory = Callable[[str], tuple[FakeProvider, str]]


async def test_text_message_is_posted_to_the_cloud_api(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    result = await adapter("whatsapp", good_config("whatsapp", origin), http).send(message("whatsapp"))

    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", f"/v21.0/{FakeWhatsApp.phone_number_id}/messages")
    assert seen.headers["authorization"] == f"Bearer {FakeWhatsApp.access_token}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+15551234567",
        "type": "text",
        "text": {"preview_url": False, "body": "Hello Ada, your order #1001 is on its way."},
        "biz_opaque_callback_data": "sb-3-42",
    }
    assert result.provider_message_id == fake.issued[0]
    assert result.provider_message_id.startswith("wamid.")


async def test_template_message_carries_its_body_parameters(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    template = {"name": "order_update", "language": "en_US", "parameters": ["Ada", "#1001"]}
    result = await adapter("whatsapp", good_config("whatsapp", origin), http).send(
        message("whatsapp", template=template)
    )

    sent = fake.requests[0].json
    assert sent["type"] == "template"
    assert "text" not in sent
    assert sent["template"] == {
        "name": "order_update",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "#1001"}],
            }
        ],
    }
    assert result.provider_message_id == fake.issued[0]


async def test_unknown_template_fails_permanently_with_metas_details(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    _, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError) as failed:
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message("whatsapp", template={"name": "nope", "language": "de"})
        )
    assert failed.value.code == "132001"
    assert failed.value.reason == (
        "(#132001) Template name does not exist in the translation: template name (nope) does not exist in de"
    )


async def test_recipient_outside_the_allowed_list_is_permanent(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    _, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError) as failed:
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message("whatsapp", to="+4915112345678")
        )
    assert (failed.value.status, failed.value.code) == (400, "131030")


async def test_rate_limit_code_is_transient_although_meta_answers_400(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    fake.mode = "rate_limited"
    with pytest.raises(TransientError) as failed:
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(message("whatsapp"))
    assert (failed.value.status, failed.value.code) == (400, "130429")


async def test_template_without_a_name_fails_before_any_request(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError, match="no name"):
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message("whatsapp", template={"parameters": ["x"]})
        )
    assert fake.requests == []


def test_secrets_include_the_webhook_secrets() -> None:
    from server.providers.adapters.whatsapp import WhatsAppAdapter

    public = WhatsAppAdapter.public_config(
        WhatsAppAdapter.validate_config(good_config("whatsapp", "http://x.test"))
    )
    assert public == {
        "phone_number_id": FakeWhatsApp.phone_number_id,
        "api_version": "v21.0",
        "base_url": "http://x.test",
    }


async def test_body_parameters_must_match_the_approved_template_in_number(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    assert isinstance(fake, FakeWhatsApp)
    with pytest.raises(PermanentError) as failed:
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message("whatsapp", template={"name": "order_update", "language": "en_US", "parameters": ["Ada"]})
        )
    assert failed.value.code == "132000"
    # No parameters at all: no components, as Meta's own hello_world example.
    await adapter("whatsapp", good_config("whatsapp", origin), http).send(
        message("whatsapp", template={"name": "hello_world", "language": "en_US", "parameters": []})
    )
    assert fake.requests[-1].json["template"] == {"name": "hello_world", "language": {"code": "en_US"}}
    assert fake.sent_templates == [SentTemplate("hello_world", "en_US", [])]


async def test_header_and_button_parameters_are_sent_as_meta_documents_components(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    assert isinstance(fake, FakeWhatsApp)
    wa = adapter("whatsapp", good_config("whatsapp", origin), http)
    await wa.send(
        message(
            "whatsapp",
            template={
                "name": "shipping_update",
                "language": "en_US",
                "parameters": ["Ada"],
                "header": {"type": "image", "parameter": "https://cdn.example.test/parcel.jpg"},
                "buttons": [{"sub_type": "url", "index": 0, "parameter": "track/1001"}],
            },
        )
    )
    assert fake.requests[-1].json["template"] == {
        "name": "shipping_update",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "header",
                "parameters": [{"type": "image", "image": {"link": "https://cdn.example.test/parcel.jpg"}}],
            },
            {"type": "body", "parameters": [{"type": "text", "text": "Ada"}]},
            {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "track/1001"}],
            },
        ],
    }
    await wa.send(
        message(
            "whatsapp",
            template={
                "name": "appointment_reminder",
                "language": "en",
                "parameters": ["Tuesday 10:00"],
                "header": {"type": "text", "parameter": "Ada"},
                "buttons": [
                    {"sub_type": "quick_reply", "index": 0, "parameter": "confirm-1001"},
                    {"sub_type": "quick_reply", "index": 1, "parameter": "cancel-1001"},
                ],
            },
        )
    )
    components = fake.requests[-1].json["template"]["components"]
    assert components[0] == {"type": "header", "parameters": [{"type": "text", "text": "Ada"}]}
    assert components[2:] == [
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "confirm-1001"}],
        },
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "1",
            "parameters": [{"type": "payload", "payload": "cancel-1001"}],
        },
    ]
    await wa.send(
        message(
            "whatsapp",
            template={
                "name": "invoice_ready",
                "language": "en_US",
                "header": {"type": "document", "parameter": "https://files.example.test/inv-7.pdf"},
                "buttons": [{"sub_type": "url", "index": 1, "parameter": "inv-7"}],
            },
        )
    )
    assert fake.requests[-1].json["template"]["components"][0] == {
        "type": "header",
        "parameters": [{"type": "document", "document": {"link": "https://files.example.test/inv-7.pdf"}}],
    }
    assert fake.sent_templates == [
        SentTemplate(
            "shipping_update",
            "en_US",
            ["Ada"],
            ("image", "https://cdn.example.test/parcel.jpg"),
            (("url", 0, "track/1001"),),
        ),
        SentTemplate(
            "appointment_reminder",
            "en",
            ["Tuesday 10:00"],
            ("text", "Ada"),
            (("quick_reply", 0, "confirm-1001"), ("quick_reply", 1, "cancel-1001")),
        ),
        SentTemplate(
            "invoice_ready",
            "en_US",
            [],
            ("document", "https://files.example.test/inv-7.pdf"),
            (("url", 1, "inv-7"),),
        ),
    ]


@pytest.mark.parametrize(
    ("template", "code"),
    [
        # The approved template has an image header and a URL button: each must be filled, in kind.
        ({"parameters": ["Ada"], "buttons": [{"sub_type": "url", "index": 0, "parameter": "t/1"}]}, "132000"),
        (
            {"parameters": ["Ada"], "header": {"type": "image", "parameter": "https://x.example.test/a.jpg"}},
            "132000",
        ),
        (
            {
                "parameters": ["Ada"],
                "header": {"type": "video", "parameter": "https://x.example.test/a.mp4"},
                "buttons": [{"sub_type": "url", "index": 0, "parameter": "t/1"}],
            },
            "132012",
        ),
        (
            {
                "parameters": ["Ada"],
                "header": {"type": "image", "parameter": "https://x.example.test/a.jpg"},
                "buttons": [{"sub_type": "quick_reply", "index": 0, "parameter": "t/1"}],
            },
            "132012",
        ),
        (
            {
                "parameters": ["Ada"],
                "header": {"type": "image", "parameter": "https://x.example.test/a.jpg"},
                "buttons": [{"sub_type": "url", "index": 2, "parameter": "t/1"}],
            },
            "132000",
        ),
    ],
)
async def test_header_and_buttons_must_match_the_approved_template(
    provider_server: ServerFactory, http: httpx.AsyncClient, template: dict[str, Any], code: str
) -> None:
    fake, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError) as failed:
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message("whatsapp", template={"name": "shipping_update", "language": "en_US"} | template)
        )
    assert failed.value.code == code
    assert isinstance(fake, FakeWhatsApp) and fake.sent_templates == []


@pytest.mark.parametrize(
    "template",
    [
        {"header": {"type": "location", "parameter": "x"}},
        {"header": "https://x.example.test/a.jpg"},
        {"buttons": [{"sub_type": "copy_code", "index": 0, "parameter": "x"}]},
        {"buttons": [{"sub_type": "url", "index": 10, "parameter": "x"}]},
        {"buttons": [{"sub_type": "url", "index": "0", "parameter": "x"}]},
        {"buttons": [{"sub_type": "url", "index": 0}]},
        {"buttons": {"sub_type": "url", "index": 0, "parameter": "x"}},
    ],
)
async def test_a_stored_template_of_a_bad_shape_fails_without_a_request(
    provider_server: ServerFactory, http: httpx.AsyncClient, template: dict[str, Any]
) -> None:
    fake, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError):
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message(
                "whatsapp",
                template={"name": "shipping_update", "language": "en_US", "parameters": ["A"]} | template,
            )
        )
    assert fake.requests == []


async def test_a_media_header_goes_by_its_uploaded_id_and_a_document_with_its_file_name(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    assert isinstance(fake, FakeWhatsApp)
    wa = adapter("whatsapp", good_config("whatsapp", origin), http)
    await wa.send(
        message(
            "whatsapp",
            template={
                "name": "shipping_update",
                "language": "en_US",
                "parameters": ["Ada"],
                "header": {"type": "image", "parameter": "1013859600285441", "source": "id"},
                "buttons": [{"sub_type": "url", "index": 0, "parameter": "track/1001"}],
            },
        )
    )
    await wa.send(
        message(
            "whatsapp",
            template={
                "name": "invoice_ready",
                "language": "en_US",
                "header": {
                    "type": "document",
                    "parameter": "https://files.example.test/inv-7.pdf",
                    "filename": "Invoice 7.pdf",
                },
                "buttons": [{"sub_type": "url", "index": 1, "parameter": "inv-7"}],
            },
        )
    )
    first, second = (r.json["template"]["components"][0] for r in fake.requests)
    assert first == {"type": "header", "parameters": [{"type": "image", "image": {"id": "1013859600285441"}}]}
    assert second == {
        "type": "header",
        "parameters": [
            {
                "type": "document",
                "document": {"link": "https://files.example.test/inv-7.pdf", "filename": "Invoice 7.pdf"},
            }
        ],
    }
    assert [t.header for t in fake.sent_templates] == [
        ("image", "id:1013859600285441"),
        ("document", "https://files.example.test/inv-7.pdf as Invoice 7.pdf"),
    ]


@pytest.mark.parametrize(
    "header",
    [
        {"type": "image", "parameter": "1013859600285441", "source": "upload"},
        {"type": "image", "parameter": "https://x.example.test/a.jpg", "filename": "a.jpg"},
    ],
)
async def test_a_media_source_or_file_name_of_a_bad_shape_fails_without_a_request(
    provider_server: ServerFactory, http: httpx.AsyncClient, header: dict[str, Any]
) -> None:
    fake, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError):
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message(
                "whatsapp",
                template={
                    "name": "shipping_update",
                    "language": "en_US",
                    "parameters": ["A"],
                    "header": header,
                },
            )
        )
    assert fake.requests == []


async def test_a_twilio_only_template_fails_on_the_cloud_api_with_a_clear_reason(
    provider_server: ServerFactory, http: httpx.AsyncClient
) -> None:
    fake, origin = provider_server("whatsapp")
    with pytest.raises(PermanentError, match="only a Twilio content_sid"):
        await adapter("whatsapp", good_config("whatsapp", origin), http).send(
            message("whatsapp", template={"content_sid": "HX" + "ab" * 16, "parameters": ["x"]})
        )
    assert fake.requests == []

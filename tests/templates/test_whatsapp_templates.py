"""A whatsapp template may name its approved WhatsApp template: checked when saved."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.templates import render, whatsapp

APPROVED = {
    "name": "order_update",
    "language": "en_US",
    "parameters": ["{{ name }}", "{{ attributes.order }}"],
}


async def _create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {
        "name": "Order update",
        "channel": "whatsapp",
        "body": "Hi {{ name }}, order {{ attributes.order }}",
    }
    return await client.post("/api/v1/templates", json=body | fields)


async def test_whatsapp_metadata_is_stored_and_returned(client: httpx.AsyncClient) -> None:
    r = await _create(client, whatsapp=APPROVED)
    assert r.status_code == 201, r.text
    tpl = r.json()
    assert tpl["whatsapp"] == APPROVED
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["whatsapp"] == APPROVED
    plain = await _create(client, name="Plain")
    assert plain.json()["whatsapp"] is None

    changed = {"name": "hello_world", "language": "en", "parameters": []}
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"whatsapp": changed})
    assert r.status_code == 200 and r.json()["whatsapp"] == changed
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"whatsapp": None})
    assert r.status_code == 200 and r.json()["whatsapp"] is None
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["whatsapp"] is None


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"name": "Order-Update", "language": "en_US"}, "name"),
        ({"name": "order update", "language": "en_US"}, "name"),
        ({"name": "", "language": "en_US"}, "name"),
        ({"name": "x" * 513, "language": "en_US"}, "name"),
        ({"name": "order_update\n", "language": "en_US"}, "name"),
        ({"name": "order_update", "language": "english"}, "language"),
        ({"name": "order_update", "language": "en-US"}, "language"),
        ({"name": "order_update", "language": "en_us"}, "language"),
        ({"name": "order_update"}, "language"),
        ({"name": "order_update", "language": "en", "parameters": ["{{ n }}"] * 21}, "parameters"),
        ({"name": "order_update", "language": "en", "parameters": [""]}, "parameters"),
        ({"name": "order_update", "language": "en", "parameters": "{{ name }}"}, "parameters"),
        ({"name": "order_update", "language": "en", "namespace": "x"}, "namespace"),
    ],
)
async def test_bad_metadata_is_refused_with_a_problem(
    client: httpx.AsyncClient, meta: dict[str, Any], field: str
) -> None:
    r = await _create(client, whatsapp=meta)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert any(field in e["field"] for e in r.json()["errors"]), r.json()


async def test_parameters_are_templates_checked_like_the_body(client: httpx.AsyncClient) -> None:
    meta = APPROVED | {"parameters": ["{{ name }}", "{% if x %}no end", "{{ ''.__class__.__mro__ }}"]}
    r = await _create(client, whatsapp=meta)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == ["whatsapp.parameters[1]", "whatsapp.parameters[2]"]
    assert errors[0]["message"].startswith("line 1:")
    assert errors[1]["message"].startswith("not allowed")
    # Nor by a later PATCH.
    tpl = (await _create(client, whatsapp=APPROVED)).json()
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"whatsapp": meta})
    assert r.status_code == 422
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["whatsapp"] == APPROVED


async def test_only_a_whatsapp_template_names_an_approved_one(client: httpx.AsyncClient) -> None:
    r = await _create(client, channel="sms", whatsapp=APPROVED)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["whatsapp"]
    tpl = (await _create(client, whatsapp=APPROVED)).json()
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"channel": "sms"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "whatsapp"
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"channel": "sms", "whatsapp": None})
    assert r.status_code == 200 and r.json()["channel"] == "sms"


def test_parameters_render_with_the_body_context_on_one_line() -> None:
    approved = whatsapp.compile_approved(
        APPROVED | {"parameters": ["{{ name|upper }}", "#{{ attributes.order }}\n x"]}
    )
    assert approved is not None
    context = render.context_for(
        {"name": "Ada", "email": "", "phone": "", "attributes": {"order": 7}, "tags": []}, {}
    )
    assert approved.render(context) == {
        "name": "order_update",
        "language": "en_US",
        "parameters": ["ADA", "#7 x"],
    }
    with pytest.raises(render.RenderError) as missing:
        approved.render(render.context_for(None, {}))
    assert missing.value.field == "whatsapp.parameters[0]"
    empty = whatsapp.compile_approved(APPROVED | {"parameters": ["{{ nickname }}"]})
    assert empty is not None
    with pytest.raises(render.RenderError, match="empty"):
        empty.render({"nickname": "  "})
    assert whatsapp.compile_approved(None) is None


WITH_EXTRAS = {
    "name": "shipping_update",
    "language": "en_US",
    "parameters": ["{{ name }}"],
    "header": {"type": "image", "parameter": "https://cdn.example.test/{{ attributes.order }}.jpg"},
    "buttons": [
        {"sub_type": "url", "index": 0, "parameter": "track/{{ attributes.order }}"},
        {"sub_type": "quick_reply", "index": 2, "parameter": "stop-{{ contact.phone }}"},
    ],
}


async def test_header_and_button_parameters_are_stored_and_returned(client: httpx.AsyncClient) -> None:
    r = await _create(client, whatsapp=WITH_EXTRAS)
    assert r.status_code == 201, r.text
    tpl = r.json()
    assert tpl["whatsapp"] == WITH_EXTRAS
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["whatsapp"] == WITH_EXTRAS
    text_header = APPROVED | {"header": {"type": "text", "parameter": "{{ name }}"}}
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"whatsapp": text_header})
    assert r.status_code == 200, r.text
    # No `header: null` or `buttons: []` where there are none: stored and answered as given.
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["whatsapp"] == text_header


def _button(**fields: Any) -> dict[str, Any]:
    return {"sub_type": "url", "index": 0, "parameter": "{{ name }}"} | fields


@pytest.mark.parametrize(
    ("extras", "field"),
    [
        ({"header": {"type": "location", "parameter": "x"}}, "whatsapp.header.type"),
        ({"header": {"type": "IMAGE", "parameter": "https://x.test/a.jpg"}}, "whatsapp.header.type"),
        ({"header": {"type": "text"}}, "whatsapp.header.parameter"),
        ({"header": {"type": "text", "parameter": ""}}, "whatsapp.header.parameter"),
        ({"header": {"type": "text", "parameter": "a\x00b"}}, "whatsapp.header.parameter"),
        ({"header": {"type": "text", "parameter": "x" * 1001}}, "whatsapp.header.parameter"),
        ({"header": {"type": "text", "parameter": "x", "format": "TEXT"}}, "whatsapp.header.format"),
        ({"header": "https://x.test/a.jpg"}, "whatsapp.header"),
        ({"header": {"type": "image", "parameter": "not a link"}}, "whatsapp.header.parameter"),
        ({"header": {"type": "video", "parameter": "ftp://x.test/a.mp4"}}, "whatsapp.header.parameter"),
        ({"buttons": [_button(index=10)]}, "whatsapp.buttons.0.index"),
        ({"buttons": [_button(index=-1)]}, "whatsapp.buttons.0.index"),
        ({"buttons": [_button(index="one")]}, "whatsapp.buttons.0.index"),
        ({"buttons": [_button(sub_type="copy_code")]}, "whatsapp.buttons.0.sub_type"),
        ({"buttons": [_button(parameter="")]}, "whatsapp.buttons.0.parameter"),
        ({"buttons": [_button(parameter="a\x00")]}, "whatsapp.buttons.0.parameter"),
        ({"buttons": [_button(), _button(sub_type="quick_reply")]}, "whatsapp.buttons"),
        ({"buttons": [_button(index=i % 10) for i in range(11)]}, "whatsapp.buttons"),
        ({"buttons": _button()}, "whatsapp.buttons"),
        ({"buttons": [_button(payload="x")]}, "whatsapp.buttons.0.payload"),
    ],
)
async def test_bad_header_or_buttons_are_refused_naming_the_field(
    client: httpx.AsyncClient, extras: dict[str, Any], field: str
) -> None:
    r = await _create(client, whatsapp=APPROVED | extras)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in r.json()["errors"]], r.json()
    # Nor by a PATCH of a template that had none.
    tpl = (await _create(client, name="Patched", whatsapp=APPROVED)).json()
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"whatsapp": APPROVED | extras})
    assert r.status_code == 422 and field in [e["field"] for e in r.json()["errors"]], r.json()
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["whatsapp"] == APPROVED


async def test_header_and_button_parameters_are_templates_checked_like_the_body(
    client: httpx.AsyncClient,
) -> None:
    meta = APPROVED | {
        "header": {"type": "text", "parameter": "{% for %}"},
        "buttons": [_button(), _button(index=1, parameter="{{ ''.__class__ }}")],
    }
    r = await _create(client, whatsapp=meta)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == ["whatsapp.header.parameter", "whatsapp.buttons[1].parameter"]
    assert errors[0]["message"].startswith("line 1:")
    assert errors[1]["message"].startswith("not allowed")


def test_header_and_buttons_render_with_the_body_context_on_one_line() -> None:
    approved = whatsapp.compile_approved(WITH_EXTRAS)
    assert approved is not None
    context = render.context_for(
        {"name": "Ada", "email": "", "phone": "+15551234567", "attributes": {"order": 7}, "tags": []}, {}
    )
    assert approved.render(context) == {
        "name": "shipping_update",
        "language": "en_US",
        "parameters": ["Ada"],
        "header": {"type": "image", "parameter": "https://cdn.example.test/7.jpg"},
        "buttons": [
            {"sub_type": "url", "index": 0, "parameter": "track/7"},
            {"sub_type": "quick_reply", "index": 2, "parameter": "stop-+15551234567"},
        ],
    }
    text = whatsapp.compile_approved(APPROVED | {"header": {"type": "text", "parameter": " {{ name }}\n!"}})
    assert text is not None
    assert text.render(context)["header"] == {"type": "text", "parameter": "Ada !"}


@pytest.mark.parametrize(
    ("meta", "field", "detail"),
    [
        (
            {"header": {"type": "document", "parameter": "{{ attributes.invoice }}"}},
            "whatsapp.header.parameter",
            "http(s) link",
        ),
        (
            {"header": {"type": "text", "parameter": "{{ nickname }}"}},
            "whatsapp.header.parameter",
            "undefined",
        ),
        (
            {"buttons": [_button(parameter="{{ attributes.missing }}")]},
            "whatsapp.buttons[0].parameter",
            "no attribute 'missing'",
        ),
        (
            {"buttons": [_button(), _button(index=1, parameter="{{ ' ' }}")]},
            "whatsapp.buttons[1].parameter",
            "empty",
        ),
    ],
)
def test_a_header_or_button_that_does_not_render_fails_naming_it(
    meta: dict[str, Any], field: str, detail: str
) -> None:
    approved = whatsapp.compile_approved(APPROVED | {"parameters": []} | meta)
    assert approved is not None
    context = render.context_for(
        {"name": "Ada", "email": "", "phone": "", "attributes": {"invoice": "see attached"}, "tags": []}, {}
    )
    with pytest.raises(render.RenderError) as failed:
        approved.render(context)
    assert failed.value.field == field
    assert detail in failed.value.detail


def test_every_parameter_is_rendered_under_the_body_budget() -> None:
    approved = whatsapp.compile_approved(
        APPROVED
        | {"parameters": [], "buttons": [_button(parameter="{% for i in range(10**9) %}x{% endfor %}")]}
    )
    assert approved is not None
    with pytest.raises(render.RenderError) as failed:
        approved.render({})
    assert failed.value.field == "whatsapp.buttons[0].parameter"


CONTENT_SID = "HX" + "5b" * 16


async def test_a_template_may_name_a_twilio_content_sid_a_meta_name_or_both(
    client: httpx.AsyncClient,
) -> None:
    twilio_only = {"content_sid": CONTENT_SID, "parameters": ["{{ name }}"]}
    r = await _create(client, whatsapp=twilio_only)
    assert r.status_code == 201, r.text
    assert r.json()["whatsapp"] == twilio_only  # stored and answered as given: no name: null
    both = APPROVED | {"content_sid": CONTENT_SID}
    r = await _create(client, name="Both", whatsapp=both)
    assert r.status_code == 201 and r.json()["whatsapp"] == both, r.text
    context = render.context_for(
        {"name": "Ada", "email": "", "phone": "", "attributes": {"order": 7}, "tags": []}, {}
    )
    approved = whatsapp.compile_approved(twilio_only)
    assert approved is not None and approved.sends_with("twilio") and not approved.sends_with("whatsapp")
    assert approved.render(context) == {"content_sid": CONTENT_SID, "parameters": ["Ada"]}
    approved = whatsapp.compile_approved(both)
    assert approved is not None and approved.sends_with("twilio") and approved.sends_with("whatsapp")
    assert approved.render(context) == {
        "name": "order_update",
        "language": "en_US",
        "content_sid": CONTENT_SID,
        "parameters": ["Ada", "7"],
    }


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"content_sid": "HX123"}, "whatsapp.content_sid"),
        ({"content_sid": "MG" + "5b" * 16}, "whatsapp.content_sid"),
        ({"content_sid": CONTENT_SID + "\n"}, "whatsapp.content_sid"),
        ({"content_sid": 7}, "whatsapp.content_sid"),
        ({"parameters": ["{{ name }}"]}, "whatsapp.content_sid"),  # neither way to send it
        ({"language": "en", "content_sid": CONTENT_SID}, "whatsapp.language"),  # a language of no name
        ({"name": "order_update", "content_sid": CONTENT_SID}, "whatsapp.language"),
    ],
)
async def test_a_bad_content_sid_or_no_way_to_send_is_refused_naming_the_field(
    client: httpx.AsyncClient, meta: dict[str, Any], field: str
) -> None:
    r = await _create(client, whatsapp=meta)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field], r.json()


async def test_a_media_header_may_be_an_uploaded_id_and_a_document_has_a_file_name(
    client: httpx.AsyncClient,
) -> None:
    by_id = APPROVED | {"header": {"type": "image", "parameter": "1013859600285441", "source": "id"}}
    r = await _create(client, whatsapp=by_id)
    assert r.status_code == 201 and r.json()["whatsapp"] == by_id, r.text
    named = APPROVED | {
        "header": {
            "type": "document",
            "parameter": "{{ attributes.invoice_id }}",
            "source": "id",
            "filename": "Invoice {{ attributes.order }}.pdf",
        }
    }
    r = await _create(client, name="Invoice", whatsapp=named)
    assert r.status_code == 201 and r.json()["whatsapp"] == named, r.text
    # `source: link` is the default: answered without it, as before.
    link = APPROVED | {
        "header": {"type": "image", "parameter": "https://cdn.example.test/a.jpg", "source": "link"}
    }
    r = await _create(client, name="Link", whatsapp=link)
    assert r.json()["whatsapp"]["header"] == {"type": "image", "parameter": "https://cdn.example.test/a.jpg"}

    approved = whatsapp.compile_approved(named)
    assert approved is not None
    context = render.context_for(
        {"name": "Ada", "email": "", "phone": "", "attributes": {"order": 7, "invoice_id": 4490}, "tags": []},
        {},
    )
    assert approved.render(context)["header"] == {
        "type": "document",
        "parameter": "4490",
        "source": "id",
        "filename": "Invoice 7.pdf",
    }
    context["attributes"]["invoice_id"] = "https://files.example.test/7.pdf"
    with pytest.raises(render.RenderError) as failed:
        approved.render(context)
    assert (failed.value.field, failed.value.detail) == ("whatsapp.header.parameter", whatsapp.NOT_AN_ID)


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ({"type": "image", "parameter": "https://x.test/a.jpg", "source": "id"}, "whatsapp.header.parameter"),
        (
            {"type": "image", "parameter": "1013859600285441"},
            "whatsapp.header.parameter",
        ),  # a link by default
        ({"type": "image", "parameter": "1", "source": "upload"}, "whatsapp.header.source"),
        ({"type": "text", "parameter": "Ada", "source": "id"}, "whatsapp.header.source"),
        (
            {"type": "image", "parameter": "https://x.test/a.jpg", "filename": "a.jpg"},
            "whatsapp.header.filename",
        ),
        (
            {"type": "document", "parameter": "https://x.test/a.pdf", "filename": ""},
            "whatsapp.header.filename",
        ),
        (
            {"type": "document", "parameter": "https://x.test/a.pdf", "filename": "{% if %}"},
            "whatsapp.header.filename",
        ),
    ],
)
async def test_a_bad_media_source_or_file_name_is_refused_naming_the_field(
    client: httpx.AsyncClient, header: dict[str, Any], field: str
) -> None:
    r = await _create(client, whatsapp=APPROVED | {"header": header})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field], r.json()

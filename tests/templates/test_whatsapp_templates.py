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

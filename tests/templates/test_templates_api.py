from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ unknown.__class__.__base__ }}",
    "{{ request|attr('__class__') }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{% for i in range(10**7) %}x{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
    "{{ 7 ** 100000000 }}",
]


async def _template(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Welcome", "channel": "email", "subject": "Hi {{ name }}", "body": "Hello {{ name }}!"}
    body.update(fields)
    r = await client.post("/api/v1/templates", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("source", ESCAPES)
async def test_sandbox_escapes_are_refused_at_save_time(client: httpx.AsyncClient, source: str) -> None:
    r = await client.post(
        "/api/v1/templates", json={"name": "Evil", "channel": "email", "subject": "x", "body": source}
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == ["body"]
    # Nor through the subject, nor by a later PATCH.
    r = await client.post(
        "/api/v1/templates", json={"name": "Evil", "channel": "email", "subject": source, "body": "x"}
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["subject"]
    tpl = await _template(client)
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"body": source})
    assert r.status_code == 422
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).json()["body"] == "Hello {{ name }}!"


async def test_syntax_error_names_the_field_and_line(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/templates",
        json={"name": "Broken", "channel": "sms", "body": "Hi\n{% if name %}no end"},
    )
    assert r.status_code == 422
    (err,) = r.json()["errors"]
    assert err["field"] == "body"
    assert err["message"].startswith("line 2:")


async def test_crud_and_preview(client: httpx.AsyncClient) -> None:
    tpl = await _template(
        client,
        subject="Welcome, {{ name }}",
        body="Plan: {{ attributes.plan }}, {{ when | default('soon') }}",
    )
    assert tpl["channel"] == "email"
    r = await client.post(
        "/api/v1/contacts", json={"name": "Ada", "email": "ada@example.test", "attributes": {"plan": "pro"}}
    )
    contact = r.json()
    r = await client.post(f"/api/v1/templates/{tpl['id']}/preview", json={"contact_id": contact["id"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "Welcome, Ada", "body": "Plan: pro, soon"}
    # A missing variable is a clear 422 in a preview, not a crash.
    r = await client.post(f"/api/v1/templates/{tpl['id']}/preview", json={})
    assert r.status_code == 422
    assert r.json()["detail"] == "template error in subject: 'name' is undefined"
    assert r.json()["errors"] == [{"field": "subject", "message": "'name' is undefined"}]

    # Names are unique per workspace, case-insensitively.
    r = await client.post("/api/v1/templates", json={"name": "WELCOME", "channel": "sms", "body": "x"})
    assert r.status_code == 409

    r = await client.patch(
        f"/api/v1/templates/{tpl['id']}", json={"name": "Renamed", "body": "Bye {{ name }}"}
    )
    assert r.status_code == 200
    assert r.json()["name"] == "Renamed" and r.json()["subject"] == "Welcome, {{ name }}"
    page = (await client.get("/api/v1/templates")).json()
    assert [t["name"] for t in page["items"]] == ["Renamed"]
    assert (await client.get("/api/v1/templates", params={"channel": "sms"})).json()["items"] == []
    assert (await client.delete(f"/api/v1/templates/{tpl['id']}")).status_code == 204
    assert (await client.get(f"/api/v1/templates/{tpl['id']}")).status_code == 404


async def test_viewer_reads_but_cannot_write(make_client: ClientFactory) -> None:
    agent = await make_client("agent")
    viewer = await make_client("viewer")
    tpl = await _template(agent)
    assert (await viewer.get(f"/api/v1/templates/{tpl['id']}")).status_code == 200
    assert (await viewer.get("/api/v1/templates")).status_code == 200
    r = await viewer.post("/api/v1/templates", json={"name": "V", "channel": "sms", "body": "x"})
    assert r.status_code == 403
    assert (await viewer.patch(f"/api/v1/templates/{tpl['id']}", json={"name": "V"})).status_code == 403
    assert (await viewer.delete(f"/api/v1/templates/{tpl['id']}")).status_code == 403


async def test_other_workspace_gets_404_everywhere(make_client: ClientFactory) -> None:
    acme = await make_client("agent", workspace="Acme")
    other = await make_client("admin", workspace="Other")
    tpl = await _template(acme)
    url = f"/api/v1/templates/{tpl['id']}"
    assert (await other.get(url)).status_code == 404
    assert (await other.patch(url, json={"name": "Mine"})).status_code == 404
    assert (await other.post(url + "/preview", json={})).status_code == 404
    assert (await other.delete(url)).status_code == 404
    assert (await other.get("/api/v1/templates")).json()["items"] == []
    assert (await acme.get(url)).json()["name"] == "Welcome"

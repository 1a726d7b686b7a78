"""Tenant isolation over the whole route table: every route that takes an id, called by another
workspace's admin with this workspace's ids, answers exactly as for an id that does not exist (404),
changes nothing, and no list shows another workspace's rows.

The routes come from the app itself, so a new route is covered the day it is added: one whose
path parameter has no factory below fails this test until one is written."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.routing import Route

from tests.conftest import ClientFactory

MISSING = 999_999_999
Ids = dict[str, int]


async def _contact(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/contacts",
        json={"name": "Victim", "email": "victim@acme.test", "phone": "+14155550100", "tags": ["t"]},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _second_contact(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post("/api/v1/contacts", json={"name": "Victim Two", "email": "victim2@acme.test"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _template(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/templates",
        json={"name": "T", "channel": "email", "subject": "Hi", "body": "Hello {{ name }}"},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _provider(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/providers",
        json={
            "name": "P",
            "kind": "sandbox",
            "channel": "email",
            "priority": 1,
            "config": {"delivery_delay_ms": -1},
        },
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _message(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/messages",
        json={
            "contact_id": ids["contact_id"],
            "channel": "email",
            "template_id": ids["template_id"],
            "send_at": "2999-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


async def _campaign(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/campaigns",
        json={"name": "C", "template_id": ids["template_id"], "audience": {"tag": "nobody"}},
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


async def _identity(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        f"/api/v1/contacts/{ids['contact_id']}/identities", json={"kind": "email", "value": "alias@acme.test"}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _endpoint(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post("/api/v1/endpoints", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _delivery(c: httpx.AsyncClient, ids: Ids) -> int:
    # Deliveries are made by the deliverer from the event log; write one row as it would.
    from server.endpoints.models import Delivery, Endpoint

    db = c._transport.app.state.services.db  # type: ignore[attr-defined]
    async with db.transaction() as s:
        endpoint = await s.get(Endpoint, ids["endpoint_id"])
        assert endpoint is not None
        d = Delivery(
            workspace_id=endpoint.workspace_id,
            endpoint_id=endpoint.id,
            event_id=1,
            event_type="contact.created",
            payload={"id": 1, "type": "contact.created", "ts": "2026-01-01T00:00:00Z", "data": {}},
            status="failed",
            attempts=3,
        )
        s.add(d)
        await s.flush()
        return int(d.id)


async def _import_job(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/contacts/import", content=b"name\nImported\n", headers={"content-type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    job_id: Any = r.json()["job_id"]  # a string (uuid hex): it is only formatted into the path
    return job_id


async def _api_key(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post("/api/v1/api-keys", json={"name": "K", "scopes": ["contacts:read"]})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _user(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post(
        "/api/v1/users", json={"email": "victim-user@acme.test", "password": "long enough password"}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _session(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.get("/api/v1/sessions")
    assert r.status_code == 200 and r.json()["items"], r.text
    session_id: Any = r.json()["items"][0]["id"]  # a string: it is only formatted into the path
    return session_id


async def _conversation(c: httpx.AsyncClient, ids: Ids) -> int:
    """A customer's SMS to a Twilio connection, signed as Twilio signs, opens a conversation."""
    from twilio.request_validator import RequestValidator

    token = "0123456789abcdef0123456789abcdef"
    r = await c.post(
        "/api/v1/providers",
        json={
            "name": "Twilio",
            "kind": "twilio",
            "channel": "sms",
            "priority": 5,
            "config": {"account_sid": "AC" + "0" * 32, "auth_token": token, "from_number": "+15005550006"},
        },
    )
    assert r.status_code == 201, r.text
    url = f"http://testserver/webhooks/{r.json()['id']}"
    form = {
        "MessageSid": "SM" + "1" * 32,
        "SmsStatus": "received",
        "From": "+14155550100",
        "To": "+15005550006",
        "Body": "Hello?",
        "NumMedia": "0",
    }
    signature = RequestValidator(token).compute_signature(url, form)
    r = await c.post(url, data=form, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200, r.text
    r = await c.get("/api/v1/conversations")
    assert r.status_code == 200, r.text
    return int(r.json()["items"][0]["id"])


async def _suppression(c: httpx.AsyncClient, ids: Ids) -> int:
    r = await c.post("/api/v1/suppressions", json={"address": "victim@acme.test"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


# In dependency order; each factory may use the ids made before it.
FACTORIES: dict[str, Callable[[httpx.AsyncClient, Ids], Awaitable[int]]] = {
    "contact_id": _contact,
    "second_contact_id": _second_contact,
    "template_id": _template,
    "provider_id": _provider,
    "message_id": _message,
    "campaign_id": _campaign,
    "identity_id": _identity,
    "endpoint_id": _endpoint,
    "delivery_id": _delivery,
    "job_id": _import_job,
    "key_id": _api_key,
    "user_id": _user,
    "session_id": _session,
    "conversation_id": _conversation,
    "suppression_id": _suppression,
}

# A valid body for routes that need one, so the answer comes from the lookup and not from validation.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/api/v1/contacts/{contact_id}"): {"name": "pwned"},
    ("PATCH", "/api/v1/templates/{template_id}"): {"name": "pwned"},
    ("PATCH", "/api/v1/providers/{provider_id}"): {"name": "pwned"},
    ("POST", "/api/v1/templates/{template_id}/preview"): {},
    ("POST", "/api/v1/contacts/{contact_id}/merge"): {"from": ["{second_contact_id}"]},
    ("POST", "/api/v1/contacts/{contact_id}/identities"): {"kind": "email", "value": "intruder@evil.test"},
    ("PATCH", "/api/v1/endpoints/{endpoint_id}"): {"description": "pwned"},
    ("PATCH", "/api/v1/users/{user_id}"): {"name": "pwned"},
    ("PATCH", "/api/v1/conversations/{conversation_id}"): {"status": "resolved"},
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"text": "pwned"},
    ("POST", "/api/v1/contacts/{contact_id}/consent"): {"channel": "email", "state": "opted_out"},
}

# Routes authenticated by something else than a user's token (provider signatures, the socket itself,
# the signed unsubscribe token: tests/consent/test_unsubscribe.py covers forged ones; the SSO flow).
NOT_USER_ROUTES = re.compile(r"^/(webhooks|ws|static|u/|sso/)")


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for r in app.routes:
        if isinstance(r, Route) and "{" in r.path and not NOT_USER_ROUTES.match(r.path):
            for m in sorted(r.methods or []):
                if m != "HEAD":
                    out.append((m, r.path))
    return out


def _fill(path: str, ids: dict[str, int]) -> str:
    return re.sub(r"{(\w+)}", lambda m: str(ids[m.group(1)]), path)


def _body(key: tuple[str, str], ids: dict[str, int]) -> Any:
    """The route's body with "{name_id}" placeholders replaced by ids."""

    def fill(v: Any) -> Any:
        if isinstance(v, str) and re.fullmatch(r"{\w+}", v):
            return ids[v[1:-1]]
        if isinstance(v, list):
            return [fill(x) for x in v]
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v

    return fill(BODIES[key]) if key in BODIES else None


async def test_every_id_route_hides_other_workspaces(app: Any, make_client: ClientFactory) -> None:
    owner = await make_client("admin", workspace="Victim Co")
    intruder = await make_client("admin", workspace="Intruder Co")
    routes = _routes(app)
    params = {p for _, path in routes for p in re.findall(r"{(\w+)}", path)}
    unknown = params - FACTORIES.keys()
    assert not unknown, f"write a factory for {sorted(unknown)} in {__name__}"

    ids: Ids = {}
    for name, factory in FACTORIES.items():
        ids[name] = await factory(owner, ids)
    missing = {name: MISSING + i for i, name in enumerate(ids)}
    before = {
        name: (await owner.get(f"/api/v1/{name.removesuffix('_id')}s/{value}")).json()
        for name, value in ids.items()
        if name in ("contact_id", "template_id", "provider_id")
    }

    checked = 0
    for method, path in routes:
        key = (method, path)
        theirs = await intruder.request(method, _fill(path, ids), json=_body(key, ids))
        nothing = await intruder.request(method, _fill(path, missing), json=_body(key, missing))
        assert theirs.status_code == 404, (
            f"{method} {path} with another workspace's id: {theirs.status_code} {theirs.text}"
        )
        assert nothing.status_code == 404, f"{method} {path} with a missing id: {nothing.status_code}"
        # The same words either way (ids the caller sent may be echoed back).
        same = [re.sub(r"\d+", "N", r.json()["detail"]) for r in (theirs, nothing)]
        assert same[0] == same[1], f"{method} {path} tells the two apart: {same}"
        checked += 1
    assert checked >= 10

    for name, snapshot in before.items():
        now = await owner.get(f"/api/v1/{name.removesuffix('_id')}s/{ids[name]}")
        assert now.status_code == 200 and now.json() == snapshot, f"{name} changed by another workspace"


async def test_lists_never_show_other_workspaces(app: Any, make_client: ClientFactory) -> None:
    owner = await make_client("admin", workspace="Victim Co")
    intruder = await make_client("admin", workspace="Intruder Co")
    ids: Ids = {}
    for name, factory in FACTORIES.items():
        ids[name] = await factory(owner, ids)
    me = (await intruder.get("/api/v1/me")).json()
    lists = [
        r.path
        for r in app.routes
        if isinstance(r, Route)
        and r.path.startswith("/api/v1/")
        and "{" not in r.path
        and "GET" in (r.methods or set())
    ]
    checked = 0
    for path in lists:
        r = await intruder.get(path)
        if r.status_code != 200 or not r.headers["content-type"].startswith("application/json"):
            continue  # exports stream CSV: covered by their own tests
        if "items" not in r.json():
            continue
        items = r.json()["items"]
        if path == "/api/v1/users":
            assert [u["id"] for u in items] == [me["id"]]
        elif path == "/api/v1/sessions":  # the caller's own sign-in only
            assert [i["current"] for i in items] == [True], items
        elif path == "/api/v1/audit":  # the caller's own doings only (its sign-in, its exports)
            assert items and all(i["actor"] == {"type": "user", "id": me["id"]} for i in items), items
        else:
            assert items == [], f"{path} shows another workspace's rows: {items}"
        checked += 1
    assert checked >= 5, lists

"""Outgoing webhooks reach public addresses only, unless SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS is set:
refused at registration for address literals and localhost, and at every connection for a name
that resolves to a private address."""

from __future__ import annotations

import ipaddress

import pytest

from server.app import create_app
from server.db import utcnow
from server.endpoints.guard import is_public, refused_host
from server.endpoints.service import Attempt
from server.settings import Settings
from tests.conftest import ClientFactory, make_settings
from tests.endpoints.conftest import DelivererFactory
from tests.endpoints.receiver import Receiver


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url, allow_private_endpoints=False)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fc00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("93.184.215.14", True),
        ("2606:4700::6810:84e5", True),
        ("::ffff:93.184.215.14", True),
    ],
)
def test_what_counts_as_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_address_literals_and_localhost_are_refused_without_a_lookup() -> None:
    for url in ("http://127.0.0.1:9/x", "https://[::1]/", "http://localhost:8080/", "http://api.LOCALHOST./"):
        why = refused_host(url)
        assert why is not None and "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS" in why, url
    assert refused_host("https://hooks.example.test/in") is None  # a name: checked on connect
    assert refused_host("https://93.184.215.14/in") is None


async def test_registering_a_private_url_answers_422_naming_the_field(make_client: ClientFactory) -> None:
    admin = await make_client("admin")
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.0.0.5/hook",
        "http://[::ffff:169.254.169.254]/",
        "http://localhost/",
    ):
        r = await admin.post("/api/v1/endpoints", json={"url": url, "events": ["*"]})
        assert r.status_code == 422, url
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "url"
    r = await admin.post("/api/v1/endpoints", json={"url": "https://hooks.example.test/in", "events": ["*"]})
    assert r.status_code == 201, r.text
    r2 = await admin.patch(f"/api/v1/endpoints/{r.json()['id']}", json={"url": "http://192.168.0.10/in"})
    assert r2.status_code == 422 and r2.json()["errors"][0]["field"] == "url"
    assert (await admin.get(f"/api/v1/endpoints/{r.json()['id']}")).json()[
        "url"
    ] == "https://hooks.example.test/in"


def _attempt(url: str) -> Attempt:
    payload = {"id": 1, "type": "contact.created", "data": {}}
    return Attempt(1, 1, url, ("whsec_test",), payload, 0, utcnow())


async def test_a_name_that_resolves_to_a_private_address_is_not_connected_to(
    receiver: Receiver, start_deliverer: DelivererFactory
) -> None:
    # "localhost" passes no literal check here: the deliverer resolves it when connecting.
    url = receiver.url("guarded").replace("127.0.0.1", "localhost")
    guarded = await start_deliverer(allow_private=False)
    outcome = await guarded.send(_attempt(url))
    assert not outcome.ok and outcome.status_code is None
    assert outcome.error is not None and "not public" in outcome.error
    assert receiver.at("guarded") == []

    allowed = await start_deliverer(allow_private=True)
    outcome = await allowed.send(_attempt(url))
    assert outcome.ok, outcome.error
    assert len(receiver.at("guarded")) == 1


async def test_the_guarded_transport_still_reaches_a_public_name(start_deliverer: DelivererFactory) -> None:
    """Without internet here, the check is that the refusal is about the address, not the
    transport: a name that does not resolve fails as a lookup, not as 'not public'."""
    guarded = await start_deliverer(allow_private=False)
    outcome = await guarded.send(_attempt("https://no-such-host.invalid/hook"))
    assert not outcome.ok and outcome.error is not None
    assert "not public" not in outcome.error and "resolve" in outcome.error


@pytest.mark.parametrize("allow", [False, True])
def test_the_embedded_deliverer_follows_the_setting(db_url: str, allow: bool) -> None:
    app = create_app(make_settings(db_url, allow_private_endpoints=allow, embedded_worker=True))
    assert app.state.services.deliverer.config.allow_private is allow

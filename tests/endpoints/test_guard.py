"""Outgoing webhooks reach public addresses only, unless SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS is set:
refused at registration for address literals and localhost, and at every connection for a name
that resolves to a private address."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest

from server.app import create_app
from server.db import utcnow
from server.endpoints.guard import is_public, refused_host
from server.endpoints.service import Attempt
from server.messages.provider_pool import make_http_client
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
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::5db8:d70e", True),  # NAT64 of a public address
        ("64:ff9b:1::5db8:d70e", False),  # local-use NAT64: never a public route
        ("2002:a00:5::1", False),  # 6to4 of 10.0.0.5
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:5db8:d70e::1", True),  # 6to4 of a public address
        ("::10.0.0.5", False),  # IPv4-compatible
        ("::ffff:0:a00:5", False),  # IPv4-translated (SIIT)
        ("fec0::1", False),  # site-local
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


class RecordingProxy:
    """A TCP listener standing in for an HTTP proxy: it only counts who connects."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        def seen(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            w.close()

        self.server = await asyncio.start_server(seen, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RecordingProxy]:
    recorder = RecordingProxy()
    url = await recorder.start()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield recorder
    assert recorder.server is not None
    recorder.server.close()
    await recorder.server.wait_closed()


@pytest.mark.parametrize("allow", [True, False])
async def test_the_deliverer_ignores_proxy_variables(
    proxy: RecordingProxy, receiver: Receiver, start_deliverer: DelivererFactory, allow: bool
) -> None:
    """A proxy from the environment would make the connection the guard checks."""
    deliverer = await start_deliverer(allow_private=allow)
    url = receiver.url("direct") if allow else "https://hooks.example.test/in"
    await deliverer.send(_attempt(url))
    assert proxy.connections == 0
    assert len(receiver.at("direct")) == (1 if allow else 0)


@pytest.mark.parametrize("allow", [True, False])
async def test_the_providers_client_ignores_proxy_variables(
    proxy: RecordingProxy, receiver: Receiver, allow: bool
) -> None:
    async with make_http_client(4, allow_private=allow) as http:
        url = receiver.url("provider") if allow else "https://api.sendgrid.example/v3/mail/send"
        with contextlib.suppress(httpx.HTTPError):
            await http.post(url, json={})
    assert proxy.connections == 0
    assert len(receiver.at("provider")) == (1 if allow else 0)

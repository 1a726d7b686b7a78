"""Adapters connect to public addresses only (unless allowed), and store only the provider's own
error words: an internal service's page, control characters and NULs never reach a reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from server.messages.provider_pool import make_http_client
from server.providers.adapters import PermanentError, SendError, TransientError
from server.providers.adapters.base import REASON_MAX_CHARS
from tests.providers.fakes import FakeProvider, LocalServer
from tests.providers.support import adapter, good_config, message

HTTP_KINDS = ["sendgrid", "mailgun", "twilio", "slack", "whatsapp"]
SECRET = "SECRET-internal-token-42"
ServerFactory = Callable[[str], tuple[FakeProvider, str]]


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(4, allow_private=False) as client:
        yield client


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_providers_client_does_not_connect_to_private_addresses(
    kind: str, host: str, provider_server: ServerFactory, guarded: httpx.AsyncClient
) -> None:
    fake, origin = provider_server(kind)
    sender = adapter(kind, good_config(kind, origin.replace("127.0.0.1", host)), guarded)
    with pytest.raises(PermanentError, match="SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS"):
        await sender.send(message(kind))
    assert fake.requests == []


def _answering(response: Response) -> LocalServer:
    async def anything(_request: Request) -> Response:
        return response

    return LocalServer(Starlette(routes=[Route("/{path:path}", anything, methods=["POST"])]))


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_an_internal_page_is_never_repeated_in_the_reason(kind: str, http: httpx.AsyncClient) -> None:
    page = PlainTextResponse(f"<html><h1>Admin</h1><p>{SECRET}</p>{'x' * 3000}</html>", 500)
    with _answering(page) as server, pytest.raises(TransientError) as failed:
        await adapter(kind, good_config(kind, server.origin), http).send(message(kind))
    assert failed.value.reason == "HTTP 500 Internal Server Error"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("twilio", {"code": 21211, "message": f"bad\x00 number\r\n\x1b[31m{'y' * 1000}"}),
        ("sendgrid", {"errors": [{"message": f"bad\x00 address\n{'y' * 1000}"}]}),
        ("mailgun", {"message": f"bad\x00\ud800 domain\n{'y' * 1000}"}),
        ("whatsapp", {"error": {"message": f"bad\x00 token\t{'y' * 1000}", "code": "190\x00"}}),
    ],
)
async def test_the_providers_own_error_is_cleaned_and_cut(
    kind: str, body: dict[str, object], http: httpx.AsyncClient
) -> None:
    raw = Response(json.dumps(body), 400, media_type="application/json")  # \u escapes: NUL, surrogate
    with _answering(raw) as server, pytest.raises(SendError) as failed:
        await adapter(kind, good_config(kind, server.origin), http).send(message(kind))
    reason = failed.value.reason
    assert reason.startswith("bad") and len(reason) <= REASON_MAX_CHARS
    assert all(c.isprintable() for c in reason), reason
    assert failed.value.code is None or failed.value.code.isprintable()


async def test_only_our_own_origin_is_reached_without_the_guard() -> None:
    """The exemption for our own webhook origin (where the sandbox posts its reports) is that
    origin, port included: `SWITCHBOARD_PUBLIC_URL=https://crm.example.com` must not open every
    port of that name (Redis beside the app, when the name resolves to this host)."""
    seen: list[str] = []

    async def anything(request: Request) -> Response:
        seen.append(request.url.path)
        return PlainTextResponse("ok")

    with LocalServer(Starlette(routes=[Route("/{path:path}", anything, methods=["POST"])])) as server:
        port = server.origin.rsplit(":", 1)[1]
        async with make_http_client(4, allow_private=False, public_url=f"http://localhost:{port}") as own:
            assert (await own.post(f"http://localhost:{port}/webhooks/1")).status_code == 200
        async with make_http_client(4, allow_private=False, public_url="http://localhost") as other:
            with pytest.raises(httpx.TransportError):
                await other.post(f"http://localhost:{port}/elsewhere")
    assert seen == ["/webhooks/1"]

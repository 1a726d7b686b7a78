from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from server.providers.adapters import ADAPTERS, get_adapter_class
from server.providers.adapters.http import accepted_id, error_from, retry_after


def test_every_kind_of_the_design_has_an_adapter() -> None:
    assert set(ADAPTERS) == {"smtp", "sendgrid", "mailgun", "twilio", "whatsapp", "slack", "sandbox"}
    assert {kind: cls.kind for kind, cls in ADAPTERS.items()} == {kind: kind for kind in ADAPTERS}
    assert ADAPTERS["twilio"].channels == {"sms", "whatsapp"}  # WhatsApp through Twilio (decision 75)
    assert ADAPTERS["sandbox"].channels == {"email", "sms", "whatsapp", "chat"}


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: mailgun, sandbox"):
        get_adapter_class("pigeon")


def response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    return httpx.Response(
        status, headers=headers, content=body, request=httpx.Request("POST", "http://p.test/x")
    )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after(response(429, {"Retry-After": "7"})) == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after(response(503, {"Retry-After": later})) or 0) <= 30
    assert retry_after(response(429, {"Retry-After": "soon"})) is None
    assert retry_after(response(429)) is None


def test_a_reset_header_is_read_as_unix_time_or_seconds() -> None:
    epoch = str(int(time.time()) + 60)
    assert (
        58
        <= (retry_after(response(429, {"X-RateLimit-Reset": epoch}), reset_header="X-RateLimit-Reset") or 0)
        <= 60
    )
    assert retry_after(response(429, {"X-RateLimit-Reset": "12"}), reset_header="X-RateLimit-Reset") == 12.0


def test_408_is_transient_and_a_redirect_permanent() -> None:
    def no_parser(body: object) -> None:
        return None

    assert type(error_from(response(408), no_parser)).__name__ == "TransientError"
    moved = error_from(response(301, body=b""), no_parser)
    assert type(moved).__name__ == "PermanentError"
    assert moved.reason == "HTTP 301 Moved Permanently"


def test_an_unreadable_success_keeps_our_key_instead_of_failing() -> None:
    assert accepted_id(response(200, body=b"<html>"), lambda b: b["id"], fallback="sb-1-2") == "sb-1-2"
    assert accepted_id(response(200, body=b'{"id": "m-1"}'), lambda b: b["id"], fallback="sb-1-2") == "m-1"

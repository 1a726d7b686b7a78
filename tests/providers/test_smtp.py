from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from server.providers.adapters import ConfigError, PermanentError, TransientError
from server.providers.adapters.smtp import SmtpAdapter, message_id_for
from tests.providers.support import adapter, message


class Inbox:
    """An aiosmtpd handler that keeps what it accepts, or refuses recipients with `rcpt_reply`."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.rcpt_reply: str | None = None
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=handler.authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def smtp_config(port: int, **overrides: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "from_email": "team@example.test",
    } | overrides


async def test_send_delivers_the_message_with_a_stable_message_id(
    inbox: tuple[Inbox, int], http: httpx.AsyncClient
) -> None:
    handler, port = inbox
    sender = adapter("smtp", smtp_config(port), http)
    result = await sender.send(message("smtp", from_name="Acme Support"))

    (envelope,) = handler.envelopes
    assert envelope.mail_from == "team@example.test"
    assert envelope.rcpt_tos == ["ada@example.test"]
    assert isinstance(envelope.content, bytes)
    received = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert received["From"] == "Acme Support <team@example.test>"
    assert received["To"] == "ada@example.test"
    assert received["Subject"] == "Your order shipped"
    assert received["Message-ID"] == "<sb-3-42@example.test>"
    assert received["Date"]
    assert received.get_content().strip() == "Hello Ada, your order #1001 is on its way."
    assert result.provider_message_id == "<sb-3-42@example.test>"

    # A retry of the same message carries the same Message-ID.
    await sender.send(message("smtp"))
    again = email.message_from_bytes(handler.envelopes[1].content, policy=email.policy.default)  # type: ignore[arg-type]
    assert again["Message-ID"] == received["Message-ID"]


async def test_login_uses_the_configured_credentials(
    inbox: tuple[Inbox, int], http: httpx.AsyncClient
) -> None:
    handler, port = inbox
    await adapter("smtp", smtp_config(port, username="team", password="s3cret"), http).send(message("smtp"))
    assert handler.logins == [(b"team", b"s3cret")]
    assert len(handler.envelopes) == 1


async def test_rejected_login_is_permanent(inbox: tuple[Inbox, int], http: httpx.AsyncClient) -> None:
    _, port = inbox
    with pytest.raises(PermanentError) as failed:
        await adapter("smtp", smtp_config(port, username="team", password="wrong"), http).send(
            message("smtp")
        )
    assert failed.value.code == "535"


async def test_a_5xx_reply_is_permanent(inbox: tuple[Inbox, int], http: httpx.AsyncClient) -> None:
    handler, port = inbox
    handler.rcpt_reply = "550 5.1.1 <ada@example.test>: Recipient address rejected: User unknown"
    with pytest.raises(PermanentError) as failed:
        await adapter("smtp", smtp_config(port), http).send(message("smtp"))
    assert failed.value.code == "550"
    assert "User unknown" in failed.value.reason
    assert handler.envelopes == []


async def test_a_4xx_reply_is_transient(inbox: tuple[Inbox, int], http: httpx.AsyncClient) -> None:
    handler, port = inbox
    handler.rcpt_reply = "451 4.7.1 Greylisted, please try again later"
    with pytest.raises(TransientError) as failed:
        await adapter("smtp", smtp_config(port), http).send(message("smtp"))
    assert failed.value.code == "451"
    assert "Greylisted" in failed.value.reason


async def test_refused_connection_is_transient(http: httpx.AsyncClient) -> None:
    with pytest.raises(TransientError, match="cannot reach"):
        await adapter("smtp", smtp_config(free_port()), http).send(message("smtp"))


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never says a word (no SMTP greeting)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_silent_server_times_out_as_transient(silent_server: int, http: httpx.AsyncClient) -> None:
    sender = adapter("smtp", smtp_config(silent_server), http)
    assert isinstance(sender, SmtpAdapter)
    sender.timeout_s = 0.2
    with pytest.raises(TransientError, match="timed out"):
        await sender.send(message("smtp"))


def test_config_defaults_and_checks() -> None:
    config = SmtpAdapter.validate_config({"host": "smtp.example.test", "from_email": "team@example.test"})
    assert config == {
        "host": "smtp.example.test",
        "port": 587,
        "starttls": True,
        "from_email": "team@example.test",
    }
    with pytest.raises(ConfigError) as invalid:
        SmtpAdapter.validate_config({"host": "", "port": 70000, "starttls": "yes", "from_email": "team"})
    assert sorted(e["field"] for e in invalid.value.errors) == [
        "config.from_email",
        "config.host",
        "config.port",
        "config.starttls",
    ]
    assert SmtpAdapter.public_config(config | {"password": "x"}) == config


def test_message_id_is_a_valid_dot_atom_for_any_key() -> None:
    assert message_id_for("sb-3-42", "a@mail.example.test") == "<sb-3-42@mail.example.test>"
    odd = message_id_for("key with spaces <>@", "a@example.test")
    assert odd == message_id_for("key with spaces <>@", "a@example.test")
    local = odd[1:].split("@")[0]
    assert local.isalnum() and len(local) == 64


async def test_smtp_does_not_connect_to_a_name_resolving_to_loopback(
    inbox: tuple[Inbox, int], http: httpx.AsyncClient
) -> None:
    handler, port = inbox
    sender = adapter("smtp", smtp_config(port, host="localhost"), http, allow_private=False)
    with pytest.raises(PermanentError, match="not public"):
        await sender.send(message("smtp"))
    assert handler.envelopes == []
    allowed = adapter("smtp", smtp_config(port, host="localhost"), http, allow_private=True)
    await allowed.send(message("smtp"))
    assert len(handler.envelopes) == 1

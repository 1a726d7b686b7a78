"""Provider adapters, one per kind, behind the interface in `base`."""

from __future__ import annotations

from server.providers.adapters.base import (
    Adapter,
    OutgoingMessage,
    PermanentError,
    SendError,
    SendResult,
    TransientError,
)
from server.providers.adapters.fields import ConfigError
from server.providers.adapters.mailgun import MailgunAdapter
from server.providers.adapters.sandbox import SandboxAdapter
from server.providers.adapters.sendgrid import SendGridAdapter
from server.providers.adapters.slack import SlackAdapter
from server.providers.adapters.smtp import SmtpAdapter
from server.providers.adapters.twilio import TwilioAdapter
from server.providers.adapters.whatsapp import WhatsAppAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    cls.kind: cls
    for cls in (
        SmtpAdapter,
        SendGridAdapter,
        MailgunAdapter,
        TwilioAdapter,
        SlackAdapter,
        WhatsAppAdapter,
        SandboxAdapter,
    )
}


def get_adapter_class(kind: str) -> type[Adapter]:
    """The adapter class for a provider kind; `KeyError` for an unknown kind."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise KeyError(f"unknown provider kind {kind!r}; known: {', '.join(sorted(ADAPTERS))}") from None


__all__ = [
    "ADAPTERS",
    "Adapter",
    "ConfigError",
    "OutgoingMessage",
    "PermanentError",
    "SendError",
    "SendResult",
    "TransientError",
    "get_adapter_class",
]

"""The one interface every provider adapter speaks.

An adapter is pure protocol: it turns an `OutgoingMessage` into the provider's request and the
provider's answer into a `SendResult` or a classified `SendError`. Retries, fallback, rate limits
and persistence belong to the dispatcher.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from server.providers.adapters.fields import ConfigError, Fields

# What a provider says goes into a message's `reason`, which every reader of the workspace sees and
# PostgreSQL must accept: one short line, the provider's own words only.
REASON_MAX_CHARS = 200
_DROPPED = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates: PostgreSQL refuses them
_CONTROL = re.compile("[\x01-\x1f\x7f-\x9f\u2028\u2029]+")


def clean(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """`text` as one printable line of at most `limit` characters."""
    text = " ".join(_CONTROL.sub(" ", _DROPPED.sub("", text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    message_id: int
    workspace_id: int
    channel: str  # email | sms | whatsapp | chat
    to: str  # email address, E.164 phone, or "" for slack
    subject: str
    body: str
    idempotency_key: str  # stable for the message across retries and crashes, e.g. "sb-<ws>-<msg id>"
    from_name: str = ""
    # whatsapp: {"name","language","parameters":[str,...],"header"?,"buttons"?} (templates/whatsapp.py)
    template: dict[str, Any] | None = None
    # Conversations (DESIGN §8): reply from the number/address the customer wrote to, where the
    # adapter can (`from_address`); email carries `Reply-To: reply+<reply_token>@<inbound_domain>`
    # when the connection has an `inbound_domain`, and its own `Message-ID`.
    from_address: str = ""
    reply_token: str = ""
    # Marketing email (DESIGN §9): the recipient's one-click unsubscribe URL, `…/u/{token}`.
    unsubscribe_url: str = ""
    unsubscribe_mailbox: str = (
        ""  # the local part of its `mailto:` (when the connection has an inbound domain)
    )


def reply_headers(config: Mapping[str, Any], msg: OutgoingMessage) -> dict[str, str]:
    """`Reply-To` and `Message-ID` for an outbound email (empty without an inbound domain)."""
    domain = config.get("inbound_domain")
    if not domain or not msg.reply_token:
        return {}
    from_domain = str(config.get("from_email") or "").rpartition("@")[2] or domain
    return {
        "Reply-To": f"reply+{msg.reply_token}@{domain}",
        "Message-ID": f"<{msg.idempotency_key}@{from_domain}>",
    }


def sender_for(config: Mapping[str, Any], msg: OutgoingMessage) -> str:
    """The email From: the address the customer wrote to when it is on the connection's own domain."""
    own = str(config.get("from_email") or "")
    wanted = msg.from_address.strip().lower()
    if wanted and "@" in wanted and wanted.rpartition("@")[2] == own.lower().rpartition("@")[2]:
        return wanted
    return own


def unsubscribe_headers(config: Mapping[str, Any], msg: OutgoingMessage) -> dict[str, str]:
    """RFC 2369 `List-Unsubscribe` (the HTTPS link, then a `mailto:` when the connection has an
    `inbound_domain`) and RFC 8058 `List-Unsubscribe-Post`; empty for a message without a link."""
    if not msg.unsubscribe_url:
        return {}
    targets = [f"<{msg.unsubscribe_url}>"]
    if (domain := config.get("inbound_domain")) and msg.unsubscribe_mailbox:
        targets.append(f"<mailto:{msg.unsubscribe_mailbox}@{domain}>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str


class SendError(Exception):
    """A send that did not go through. `code` is the provider's own error code, when it gives one."""

    def __init__(self, reason: str, *, status: int | None = None, code: str | None = None) -> None:
        reason = clean(reason)
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = None if code is None else clean(code, 32)


class TransientError(SendError):
    """Worth retrying later (timeout, connection error, 429, 5xx); `retry_after` in seconds if the provider said."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(reason, status=status, code=code)
        self.retry_after = retry_after


class PermanentError(SendError):
    """Retrying the same message cannot succeed (rejected, invalid address, bad credentials)."""


class Adapter(ABC):
    """One provider connection. Build it once per connection and keep it: the sandbox owns
    background webhook tasks until `aclose`. Timeouts are those of the shared `http` client."""

    kind: ClassVar[str]
    channels: ClassVar[frozenset[str]]
    required_keys: ClassVar[frozenset[str]]
    secret_keys: ClassVar[frozenset[str]]  # config keys the API must never return
    # Where the connection points: URLs and hosts the public-only guard checks when saved...
    endpoint_keys: ClassVar[frozenset[str]] = frozenset({"base_url"})
    # ...and every key that, changed, sends the secrets somewhere else (so they must be given again).
    location_keys: ClassVar[frozenset[str]] = frozenset({"base_url"})

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: httpx.AsyncClient,
        provider_id: int,
        webhook_url: str,
        webhook_key: str,
        allow_private: bool = False,
    ) -> None:
        self.config = self.validate_config(config)
        self.http = http  # guarded by its owner (`make_http_client`)
        # Connections the adapter opens itself (SMTP) go to public addresses only unless this is set.
        self.allow_private = allow_private
        self.provider_id = provider_id
        self.webhook_url = webhook_url
        self.webhook_key = webhook_key

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The normalised config (defaults filled in), or `ConfigError` listing every bad field."""
        if not isinstance(config, Mapping):
            raise ConfigError([{"field": "config", "message": "must be an object"}])
        fields = Fields(config)
        cls.check_config(fields)
        return fields.result()

    @classmethod
    @abstractmethod
    def check_config(cls, fields: Fields) -> None:
        """Read every key of this kind through `fields` (which records errors and unknown keys)."""

    @classmethod
    def public_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config without its secrets: what the API may show."""
        return {k: v for k, v in config.items() if k not in cls.secret_keys}

    @abstractmethod
    async def send(self, msg: OutgoingMessage) -> SendResult: ...

    def sender(self, msg: OutgoingMessage) -> str | None:
        """The number `send` sends `msg` from, when known before sending (the dispatcher checks a
        marketing message against opt-outs given to one number); None when the provider picks it."""
        return None

    async def aclose(self) -> None:
        """Release what the adapter owns (not the shared `http` client)."""
        return None

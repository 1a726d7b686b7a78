"""Slack incoming webhook: `POST <webhook_url>` with JSON `{"text": ...}`.

Slack answers `200 ok` as plain text, or an error word as plain text (`invalid_payload`,
`channel_is_archived`, `action_prohibited`, `no_service`, ...) with a 4xx, `rollup_error` with a
500, and 429 with `Retry-After` when rate limited. It returns no message id and has no
idempotency mechanism, so the result id is our idempotency key.

The webhook URL is a secret (anyone holding it can post). `base_url`, when set, replaces the
URL's origin, so tests and proxies can keep the real path.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import urlsplit

from server.providers.adapters import http
from server.providers.adapters.base import Adapter, OutgoingMessage, SendResult
from server.providers.adapters.fields import Fields

ERROR_WORD = re.compile(r"[a-z][a-z0-9_]{0,63}")


class SlackAdapter(Adapter):
    kind: ClassVar[str] = "slack"
    channels: ClassVar[frozenset[str]] = frozenset({"chat"})
    required_keys: ClassVar[frozenset[str]] = frozenset({"webhook_url"})
    secret_keys: ClassVar[frozenset[str]] = frozenset({"webhook_url"})
    endpoint_keys: ClassVar[frozenset[str]] = frozenset({"base_url", "webhook_url"})
    location_keys: ClassVar[frozenset[str]] = frozenset({"base_url", "webhook_url"})

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.url("webhook_url", required=True)
        fields.origin(default=None)

    async def send(self, msg: OutgoingMessage) -> SendResult:
        url = self.config["webhook_url"]
        if base := self.config.get("base_url"):
            url = base + urlsplit(url)._replace(scheme="", netloc="").geturl()
        text = f"*{msg.subject}*\n{msg.body}" if msg.subject else msg.body
        await http.post(
            self.http,
            url,
            json={"text": text},
            parse_error=parse_error,
        )
        return SendResult(msg.idempotency_key)


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """Slack's webhook errors are one plain-text word (`no_service`); anything else is not Slack's."""
    if isinstance(body, str) and ERROR_WORD.fullmatch(body):
        return body, None
    return None

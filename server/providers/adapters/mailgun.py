"""Mailgun Messages API: `POST /v3/{domain}/messages`, basic auth `api:<key>`, form fields.

Idempotency: Mailgun has no idempotency key for sends. We attach `v:sb_message_id` and
`v:sb_workspace_id`; Mailgun returns these "user-variables" in every webhook's `event-data`, so
the webhook handler can match events to our message even if the answer with the id was lost.
Point `base_url` at `https://api.eu.mailgun.net` for an EU domain.
"""

from __future__ import annotations

from email.utils import formataddr
from typing import Any, ClassVar

from server.providers.adapters import http
from server.providers.adapters.base import Adapter, OutgoingMessage, SendResult, reply_headers, sender_for
from server.providers.adapters.fields import Fields

PUBLIC_API = "https://api.mailgun.net"
DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"


class MailgunAdapter(Adapter):
    kind: ClassVar[str] = "mailgun"
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    required_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "domain", "from_email"})
    secret_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "webhook_signing_key"})
    location_keys: ClassVar[frozenset[str]] = frozenset({"base_url", "domain"})

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.string("api_key", required=True)
        fields.string(
            "domain", required=True, pattern=DOMAIN, hint="must be a domain name such as mg.example.com"
        )
        fields.email("from_email", required=True)
        fields.string("webhook_signing_key")
        fields.string(
            "inbound_domain", pattern=DOMAIN, hint="must be a domain name"
        )  # Reply-To (conversations)
        fields.origin(default=PUBLIC_API)

    async def send(self, msg: OutgoingMessage) -> SendResult:
        sender = sender_for(self.config, msg)
        form = {
            "from": formataddr((msg.from_name, sender)) if msg.from_name else sender,
            "to": msg.to,
            "subject": msg.subject,
            "text": msg.body,
            "v:sb_message_id": str(msg.message_id),
            "v:sb_workspace_id": str(msg.workspace_id),
        }
        for name, value in reply_headers(self.config, msg).items():
            form[f"h:{name}"] = value
        response = await http.post(
            self.http,
            f"{self.config['base_url']}/v3/{self.config['domain']}/messages",
            data=form,
            auth=("api", self.config["api_key"]),
            parse_error=parse_error,
        )
        return SendResult(http.accepted_id(response, lambda b: b["id"], fallback=msg.idempotency_key))


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """`{"message": "..."}`, or a 401's plain text `Forbidden`."""
    if body == "Forbidden":
        return body, None
    return str(body["message"]), None

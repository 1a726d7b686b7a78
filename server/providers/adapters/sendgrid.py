"""SendGrid v3 Mail Send: `POST /v3/mail/send`, Bearer API key, JSON; 202 with `X-Message-Id`.

Idempotency: the Mail Send API has no idempotency key, so a retry after a lost response can
send twice. We put `custom_args` (`sb_message_id`, `sb_workspace_id`) on every message: SendGrid
copies them into each Event Webhook event, which lets the webhook handler match events to our
message even when the `X-Message-Id` answer was lost.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from server.providers.adapters import http
from server.providers.adapters.base import Adapter, OutgoingMessage, SendResult, reply_headers, sender_for
from server.providers.adapters.fields import Fields

PUBLIC_API = "https://api.sendgrid.com"


class SendGridAdapter(Adapter):
    kind: ClassVar[str] = "sendgrid"
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    required_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "from_email"})
    secret_keys: ClassVar[frozenset[str]] = frozenset({"api_key"})

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.string("api_key", required=True)
        fields.email("from_email", required=True)
        key = fields.string("webhook_public_key")
        if key is not None and not is_p256_public_key(key):
            fields.error("webhook_public_key", "must be a P-256 public key, base64 DER or PEM")
        fields.string("inbound_domain", pattern=r"[A-Za-z0-9.-]{1,253}", hint="must be a domain name")
        fields.origin(default=PUBLIC_API)

    async def send(self, msg: OutgoingMessage) -> SendResult:
        sender: dict[str, str] = {"email": sender_for(self.config, msg)}
        if msg.from_name:
            sender["name"] = msg.from_name
        payload: dict[str, Any] = {
            "personalizations": [{"to": [{"email": msg.to}]}],
            "from": sender,
            "subject": msg.subject,
            "content": [{"type": "text/plain", "value": msg.body}],
            "custom_args": {"sb_message_id": str(msg.message_id), "sb_workspace_id": str(msg.workspace_id)},
        }
        headers = reply_headers(self.config, msg)
        if "Reply-To" in headers:
            payload["reply_to"] = {"email": headers["Reply-To"]}
            payload["headers"] = {"Message-ID": headers["Message-ID"]}
        response = await http.post(
            self.http,
            f"{self.config['base_url']}/v3/mail/send",
            json=payload,
            headers={"Authorization": f"Bearer {self.config['api_key']}"},
            parse_error=parse_error,
            reset_header="X-RateLimit-Reset",
        )
        # SendGrid always sends X-Message-Id on 202; the key is only a fallback so we never store "".
        return SendResult(response.headers.get("X-Message-Id") or msg.idempotency_key)


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """`{"errors": [{"message", "field", "help"}, ...]}`."""
    errors = body["errors"]
    messages = [f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"]) for e in errors]
    return "; ".join(messages), None


def is_p256_public_key(text: str) -> bool:
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)

"""WhatsApp Business Cloud API: `POST /{version}/{phone_number_id}/messages`, Bearer token, JSON.

Free-form `text` messages only reach a customer inside the 24 h customer-service window; outside
it Meta refuses with 131047 (re-engagement) and a `template` message is needed.

Idempotency: the Cloud API has no idempotency key. We set `biz_opaque_callback_data` to our
idempotency key: Meta does not process it but echoes it in every status webhook for the message,
so the webhook handler can match a status to our message even when the answer with the `wamid`
was lost. Meta reports most failures, rate limits included, as HTTP 400 with a numeric
`error.code`, so the code, not the HTTP status, decides whether a retry can help.
"""

from __future__ import annotations

from typing import Any, ClassVar

from server.providers.adapters import http
from server.providers.adapters.base import (
    Adapter,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from server.providers.adapters.fields import Fields

PUBLIC_API = "https://graph.facebook.com"
API_VERSION = "v21.0"
# Throttling and "temporarily unavailable" codes (Graph API and Cloud API error code tables):
# 1/2 API unknown/service, 4 app rate limit, 80007 WABA rate limit, 130429 throughput limit,
# 131000 unknown error, 131016 service unavailable, 131048 spam rate limit, 131056 pair rate
# limit, 133004 server temporarily unavailable. Any other 4xx code (131047 re-engagement,
# 131026 undeliverable, 190 expired token, 132xxx template errors...) is permanent.
TRANSIENT_CODES = frozenset(
    {"1", "2", "4", "80007", "130429", "131000", "131016", "131048", "131056", "133004"}
)
OPAQUE_DATA_MAX_BYTES = 512


class WhatsAppAdapter(Adapter):
    kind: ClassVar[str] = "whatsapp"
    channels: ClassVar[frozenset[str]] = frozenset({"whatsapp"})
    required_keys: ClassVar[frozenset[str]] = frozenset({"access_token", "phone_number_id"})
    secret_keys: ClassVar[frozenset[str]] = frozenset({"access_token", "app_secret", "verify_token"})

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.string("access_token", required=True)
        fields.string("phone_number_id", required=True, pattern=r"[0-9]{1,32}", hint="must be the numeric id")
        fields.string("app_secret")  # verifies X-Hub-Signature-256 on status webhooks
        fields.string("verify_token")  # answers the GET subscription handshake
        fields.string(
            "api_version", default=API_VERSION, pattern=r"v[0-9]{1,3}\.[0-9]{1,3}", hint="like v21.0"
        )
        fields.origin(default=PUBLIC_API)

    async def send(self, msg: OutgoingMessage) -> SendResult:
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": msg.to,
        }
        if msg.template is not None:
            payload["type"] = "template"
            payload["template"] = template_object(msg.template)
        else:
            payload["type"] = "text"
            payload["text"] = {"preview_url": False, "body": msg.body}
        if len(msg.idempotency_key.encode()) <= OPAQUE_DATA_MAX_BYTES:
            payload["biz_opaque_callback_data"] = msg.idempotency_key
        cfg = self.config
        try:
            response = await http.post(
                self.http,
                f"{cfg['base_url']}/{cfg['api_version']}/{cfg['phone_number_id']}/messages",
                json=payload,
                headers={"Authorization": f"Bearer {cfg['access_token']}"},
                parse_error=parse_error,
            )
        except PermanentError as exc:
            if exc.code in TRANSIENT_CODES:
                raise TransientError(exc.reason, status=exc.status, code=exc.code) from exc
            raise
        return SendResult(
            http.accepted_id(response, lambda b: b["messages"][0]["id"], fallback=msg.idempotency_key)
        )


def template_object(template: dict[str, Any]) -> dict[str, Any]:
    """`{"name", "language", "parameters": [str, ...]}` as the Cloud API's template object."""
    name = template.get("name")
    language = template.get("language") or "en_US"
    parameters = template.get("parameters") or []
    if not isinstance(name, str) or not name:
        raise PermanentError("whatsapp template has no name")
    if not isinstance(language, str) or not isinstance(parameters, list):
        raise PermanentError("whatsapp template language must be a string and parameters a list")
    obj: dict[str, Any] = {"name": name, "language": {"code": language}}
    if parameters:
        obj["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": str(p)} for p in parameters]}
        ]
    return obj


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """`{"error": {"message", "type", "code", "error_subcode", "error_data": {"details"}, "fbtrace_id"}}`."""
    error = body["error"]
    reason = str(error["message"])
    details = (error.get("error_data") or {}).get("details")
    if details and details not in reason:
        reason = f"{reason}: {details}"
    code = error.get("code")
    return reason, None if code is None else str(code)

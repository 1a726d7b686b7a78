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
from server.templates.whatsapp import MEDIA

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


BUTTON_PARAMETER = {"quick_reply": "payload", "url": "text"}  # a button's sub_type -> its parameter's type


def template_object(template: dict[str, Any]) -> dict[str, Any]:
    """`{"name", "language", "parameters": [str, ...], "header"?: {"type", "parameter", "source"?,
    "filename"?}, "buttons"?: [{"sub_type", "index", "parameter"}]}` (`server/templates/whatsapp.py`)
    as the Cloud API's template object: `components` for the header, the body and each button."""
    name = template.get("name")
    language = template.get("language") or "en_US"
    parameters = template.get("parameters") or []
    header = template.get("header")
    buttons = template.get("buttons") or []
    if not isinstance(name, str) or not name:
        raise PermanentError(
            "whatsapp template has no name: the Cloud API sends an approved template by its name and"
            " language (this one names only a Twilio content_sid)"
        )
    if not isinstance(language, str) or not isinstance(parameters, list) or not isinstance(buttons, list):
        raise PermanentError("whatsapp template language must be a string, parameters and buttons lists")
    components: list[dict[str, Any]] = []
    if header is not None:
        components.append({"type": "header", "parameters": [_header_parameter(header)]})
    if parameters:
        components.append(
            {"type": "body", "parameters": [{"type": "text", "text": str(p)} for p in parameters]}
        )
    components.extend(_button(b) for b in buttons)
    obj: dict[str, Any] = {"name": name, "language": {"code": language}}
    if components:
        obj["components"] = components
    return obj


def _header_parameter(header: Any) -> dict[str, Any]:
    """A text header's `{"type": "text", "text"}`, or a media header's `{"type": "image",
    "image": {"link"}}` (`{"id"}` for an uploaded media; likewise `document`, with its
    `filename` when given, and `video`)."""
    kind = header.get("type") if isinstance(header, dict) else None
    value = header.get("parameter") if isinstance(header, dict) else None
    source = header.get("source", "link") if isinstance(header, dict) else None
    filename = header.get("filename") if isinstance(header, dict) else None
    if (
        not isinstance(value, str)
        or not (kind == "text" or kind in MEDIA)
        or source not in ("link", "id")
        or not (filename is None or (kind == "document" and isinstance(filename, str)))
    ):
        raise PermanentError(
            "whatsapp template header must be {type: text|image|document|video, parameter,"
            " source?: link|id, filename?: (document)}"
        )
    if kind == "text":
        return {"type": "text", "text": value}
    media = {source: value}
    if filename:
        media["filename"] = filename
    return {"type": kind, kind: media}


def _button(button: Any) -> dict[str, Any]:
    """`{"type": "button", "sub_type", "index": "<0-9>", "parameters": [one]}`: a quick reply's
    `payload`, a URL button's `text` (the suffix of its URL). Meta writes the index as a string."""
    sub_type = button.get("sub_type") if isinstance(button, dict) else None
    index = button.get("index") if isinstance(button, dict) else None
    value = button.get("parameter") if isinstance(button, dict) else None
    kind = BUTTON_PARAMETER.get(sub_type) if isinstance(sub_type, str) else None
    if kind is None or type(index) is not int or not 0 <= index <= 9 or not isinstance(value, str):
        raise PermanentError(
            "whatsapp template button must be {sub_type: quick_reply|url, index: 0-9, parameter}"
        )
    return {
        "type": "button",
        "sub_type": sub_type,
        "index": str(index),
        "parameters": [{"type": kind, kind: value}],
    }


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """`{"error": {"message", "type", "code", "error_subcode", "error_data": {"details"}, "fbtrace_id"}}`."""
    error = body["error"]
    reason = str(error["message"])
    details = (error.get("error_data") or {}).get("details")
    if details and details not in reason:
        reason = f"{reason}: {details}"
    code = error.get("code")
    return reason, None if code is None else str(code)

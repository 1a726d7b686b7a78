"""Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{sid}/Messages.json`, form-encoded,
basic auth `AccountSid:AuthToken`; 201 with the Message resource (`sid`).

WhatsApp goes through the same resource with `whatsapp:`-prefixed `To` and `From` numbers (a
Messaging Service picks its WhatsApp sender itself). Inside the 24-hour customer-service window a
free-form `Body`; a template message (outside it) is the Content API template the message's
rendered `whatsapp_template` names: `ContentSid` and `ContentVariables`, a JSON object of its body
parameters numbered from "1", instead of `Body`.

Idempotency: the Messages API has no idempotency key (Twilio's docs say sending an SMS is not an
idempotent POST and a retry after a 500 may deliver twice), so nothing is sent for it. The status
callback URL is set per message so delivery reports reach our webhook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from server.providers.adapters import http
from server.providers.adapters.base import Adapter, OutgoingMessage, PermanentError, SendResult
from server.providers.adapters.fields import Fields

PUBLIC_API = "https://api.twilio.com"
E164 = r"\+[1-9][0-9]{1,14}"
MESSAGING_SERVICE_SID = r"MG[0-9a-fA-F]{32}"
WHATSAPP_PREFIX = "whatsapp:"  # Twilio's address of a WhatsApp number
NO_CONTENT_SID = (
    "whatsapp template has no content_sid: Twilio sends an approved template by the Content SID"
    " (HX…) of its Content API template, set it in the template's whatsapp metadata"
)


class TwilioAdapter(Adapter):
    kind: ClassVar[str] = "twilio"
    channels: ClassVar[frozenset[str]] = frozenset({"sms", "whatsapp"})
    required_keys: ClassVar[frozenset[str]] = frozenset({"account_sid", "auth_token", "from_number"})
    secret_keys: ClassVar[frozenset[str]] = frozenset({"auth_token"})

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.string(
            "account_sid",
            required=True,
            pattern=r"AC[0-9a-fA-F]{32}",
            hint="must look like AC + 32 hex digits",
        )
        fields.string("auth_token", required=True)
        fields.string(
            "from_number",
            required=True,
            pattern=f"{E164}|{MESSAGING_SERVICE_SID}",
            hint="must be an E.164 number (+15551234567) or a Messaging Service SID (MG...)",
        )
        fields.origin(default=PUBLIC_API)

    def _from(self, msg: OutgoingMessage) -> str:
        if re.fullmatch(E164, msg.from_address):  # a reply: from the number the customer wrote to
            return msg.from_address
        return str(self.config["from_number"])

    def sender(self, msg: OutgoingMessage) -> str | None:
        sender = self._from(msg)
        return None if sender.startswith("MG") else sender  # a Messaging Service picks the number

    async def send(self, msg: OutgoingMessage) -> SendResult:
        sid = self.config["account_sid"]
        sender = self._from(msg)
        prefix = WHATSAPP_PREFIX if msg.channel == "whatsapp" else ""
        form = {"To": f"{prefix}{msg.to}"}
        form.update(content(msg.template) if msg.template else {"Body": msg.body})
        if self.webhook_url:
            # Our id in the (signed) callback URL lets a status callback that races ahead of the
            # stored SID still find its message.
            sep = "&" if "?" in self.webhook_url else "?"
            form["StatusCallback"] = f"{self.webhook_url}{sep}sb_message_id={msg.message_id}"
        # A Messaging Service picks the sender number itself.
        if sender.startswith("MG"):
            form["MessagingServiceSid"] = sender
        else:
            form["From"] = f"{prefix}{sender}"
        response = await http.post(
            self.http,
            f"{self.config['base_url']}/2010-04-01/Accounts/{sid}/Messages.json",
            data=form,
            auth=(sid, self.config["auth_token"]),
            parse_error=parse_error,
        )
        return SendResult(http.accepted_id(response, lambda b: b["sid"], fallback=msg.idempotency_key))


def content(template: Mapping[str, Any]) -> dict[str, str]:
    """A WhatsApp template message's `ContentSid` and `ContentVariables` (`{"1": …, "2": …}`, the
    body parameters in order), from what `server/templates/whatsapp.py` rendered."""
    sid = template.get("content_sid")
    if not isinstance(sid, str) or not sid:
        raise PermanentError(NO_CONTENT_SID)
    parameters = template.get("parameters") or []
    form = {"ContentSid": sid}
    if parameters:
        variables = {str(n): str(p) for n, p in enumerate(parameters, start=1)}
        form["ContentVariables"] = orjson.dumps(variables).decode()
    return form


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """`{"code": 21211, "message": "...", "more_info": "...", "status": 400}`."""
    code = body.get("code")
    return str(body["message"]), None if code is None else str(code)

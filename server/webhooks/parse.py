"""Provider webhook payloads → normalised `ProviderEvent`s.

Only called on a verified body. Each provider's vocabulary is mapped onto ours: `status` is the
message status the event implies (None when it only adds to the timeline, like an open), `kind`
names what happened, and `suppress` says when the address must never be sent to again (hard
bounces, spam reports, unsubscribes; never soft bounces or deferrals).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from server.jsonlimits import TooDeep, loads_bounded
from server.webhooks.verify import WEBHOOK_MAX_DEPTH

# How a provider event id is derived when the provider gives none (Twilio, WhatsApp).
_HASH_PREFIX = "h:"


# message_event.provider_event_id is VARCHAR(200): a longer id is stored as its hash.
_EVENT_ID_MAX = 200


class MalformedPayload(ValueError):
    """The body is not what this provider sends: answer 400."""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    provider_event_id: str
    provider_message_id: str | None
    our_message_id: int | None
    status: str | None  # queued|sending|sent|delivered|bounced|failed, or None: record only
    kind: str  # accepted, delivered, bounced, deferred, opened, clicked, spam, unsubscribed, failed, ...
    reason: str | None
    recipient: str | None
    suppress: str | None  # bounce|unsubscribe|spam
    occurred_at: dt.datetime
    raw: dict[str, Any] = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.provider_event_id) > _EVENT_ID_MAX:
            object.__setattr__(self, "provider_event_id", event_hash("long-id", self.provider_event_id))


def event_hash(*parts: object) -> str:
    """A stable event id for providers that send none: the same delivery hashes the same."""
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return _HASH_PREFIX + hashlib.sha256(joined.encode()).hexdigest()[:40]


# What PostgreSQL cannot store in text or JSONB: NUL, and UTF-16 surrogates left alone by a JSON
# escape (a valid pair is decoded into one character, so any surrogate left is unpaired).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(doc: Any) -> Any:
    """`doc` with every NUL and unpaired surrogate in its strings (keys too) replaced by U+FFFD:
    what a provider sends is kept, with a stand-in, rather than refused by the database."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return _UNSTORABLE.sub("\ufffd", value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(doc)  # recursion is bounded: documents are read with WEBHOOK_MAX_DEPTH


# In an ASCII body without NUL bytes (read as UTF-8, not UTF-16/32; no raw surrogate bytes, which
# `json.loads` would let through) a NUL or an unpaired surrogate can only come as a `\u` escape:
# the parser refuses raw control characters. Such a body without those escapes needs no cleaning
# walk; for a provider's batch of a thousand events that walk was a sixth of its handling.
_MAYBE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _clean_already(body: bytes) -> bool:
    return body.isascii() and b"\x00" not in body and _MAYBE_UNSTORABLE.search(body) is None


def _json(body: bytes) -> Any:
    try:
        doc = loads_bounded(body, max_depth=WEBHOOK_MAX_DEPTH, lenient=True)
        return doc if _clean_already(body) else storable(doc)
    except TooDeep as exc:
        raise MalformedPayload(f"body nests deeper than {WEBHOOK_MAX_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload("body is not JSON") from exc


def _from_unix(value: Any, default: dt.datetime) -> dt.datetime:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise MalformedPayload("timestamp is not a number")
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise MalformedPayload(f"timestamp {value!r} is not a time")


# The idempotency key a send carries (`sb-<workspace id>-<message id>`), echoed back by WhatsApp.
_IDEMPOTENCY_KEY = re.compile(r"^sb-\d+-(\d{1,18})$")


def _our_id(value: Any) -> int | None:
    """Our message id as carried in custom args / user variables (strings there) or an idempotency key."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**62 else None  # an id, not a number the database would refuse
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value.isdigit() and len(value) <= 18:
        return int(value)
    match = _IDEMPOTENCY_KEY.match(value)
    return int(match.group(1)) if match else None


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _strip_brackets(message_id: str | None) -> str | None:
    return message_id.strip().strip("<>") if message_id else None


# --- SendGrid Event Webhook -------------------------------------------------------------------

# event → (kind, status)
_SENDGRID: dict[str, tuple[str, str | None]] = {
    "processed": ("accepted", "sent"),
    "deferred": ("deferred", None),
    "delivered": ("delivered", "delivered"),
    "open": ("opened", None),
    "click": ("clicked", None),
    "spamreport": ("spam", None),
    "unsubscribe": ("unsubscribed", None),
    "group_unsubscribe": ("unsubscribed", None),
    "group_resubscribe": ("resubscribed", None),
}
# SendGrid drops a message to an address already on one of its own suppression lists: mirror it.
_SENDGRID_DROP_SUPPRESS = {
    "bounced address": "bounce",
    "unsubscribed address": "unsubscribe",
    "spam reporting address": "spam",
}


def sendgrid_message_id(sg_message_id: Any) -> str | None:
    """`sg_message_id` is the `X-Message-Id` the send returned, plus `.filter…` routing parts."""
    if not isinstance(sg_message_id, str) or not sg_message_id:
        return None
    return sg_message_id.split(".", 1)[0]


def _sendgrid_event(item: Any, now: dt.datetime) -> ProviderEvent:
    if not isinstance(item, dict) or not isinstance(item.get("event"), str):
        raise MalformedPayload("each SendGrid event must be an object with an `event`")
    name: str = item["event"]
    reason = _str_or_none(item.get("reason") or item.get("response"))
    kind: str
    status: str | None
    suppress: str | None = None
    if name == "bounce":
        # `type` is `bounce` (permanent) or `blocked` (the receiving server refused it for now).
        hard = item.get("type", "bounce") == "bounce"
        kind, status, suppress = "bounced", "bounced", "bounce" if hard else None
        if not hard:
            reason = f"blocked: {reason}" if reason else "blocked"
    elif name == "dropped":
        kind, status = "dropped", "failed"
        suppress = _SENDGRID_DROP_SUPPRESS.get((reason or "").strip().lower())
    elif name in _SENDGRID:
        kind, status = _SENDGRID[name]
        if name == "spamreport":
            suppress = "spam"
        elif name in ("unsubscribe", "group_unsubscribe"):
            suppress = "unsubscribe"
    else:
        kind, status = name, None
    event_id = _str_or_none(item.get("sg_event_id")) or event_hash(
        "sendgrid", json.dumps(item, sort_keys=True, default=str)
    )
    return ProviderEvent(
        provider_event_id=event_id,
        provider_message_id=sendgrid_message_id(item.get("sg_message_id")),
        our_message_id=_our_id(item.get("sb_message_id")),
        status=status,
        kind=kind,
        reason=reason,
        recipient=_str_or_none(item.get("email")),
        suppress=suppress,
        occurred_at=_from_unix(item.get("timestamp"), now),
        raw=item,
    )


def parse_sendgrid(body: bytes, now: dt.datetime) -> list[ProviderEvent]:
    doc = _json(body)
    if not isinstance(doc, list):
        raise MalformedPayload("a SendGrid batch is a JSON array")
    return [_sendgrid_event(item, now) for item in doc]


# --- Mailgun webhooks (event-data) ------------------------------------------------------------

_MAILGUN: dict[str, tuple[str, str | None, str | None]] = {
    "accepted": ("accepted", "sent", None),
    "delivered": ("delivered", "delivered", None),
    "opened": ("opened", None, None),
    "clicked": ("clicked", None, None),
    "unsubscribed": ("unsubscribed", None, "unsubscribe"),
    "complained": ("spam", None, "spam"),
    "rejected": ("failed", "failed", None),
}
# A permanent failure because Mailgun already suppresses the address: mirror its list.
_MAILGUN_SUPPRESSED = {
    "suppress-bounce": "bounce",
    "suppress-unsubscribe": "unsubscribe",
    "suppress-complaint": "spam",
}
# Permanent failures that say nothing about the address itself (gave up retrying, ESP block).
_MAILGUN_NOT_ADDRESS = {"old", "esp-block"}


def _mailgun_failure(data: dict[str, Any]) -> tuple[str, str | None, str | None]:
    severity = data.get("severity")
    why = str(data.get("reason") or "")
    if severity != "permanent":
        return "deferred", None, None
    if why in _MAILGUN_SUPPRESSED:
        return "failed", "failed", _MAILGUN_SUPPRESSED[why]
    if why in _MAILGUN_NOT_ADDRESS:
        return "failed", "failed", None
    return "bounced", "bounced", "bounce"


def parse_mailgun(body: bytes, now: dt.datetime) -> list[ProviderEvent]:
    doc = _json(body)
    data = doc.get("event-data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise MalformedPayload("a Mailgun webhook carries `event-data` with an `event`")
    name: str = data["event"]
    if name == "failed":
        kind, status, suppress = _mailgun_failure(data)
    else:
        kind, status, suppress = _MAILGUN.get(name, (name, None, None))
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = headers.get("message-id") if isinstance(headers, dict) else None
    user_vars = data.get("user-variables")
    delivery = data.get("delivery-status")
    reason = None
    if isinstance(delivery, dict):
        reason = _str_or_none(delivery.get("description") or delivery.get("message"))
    if name == "failed":
        reason = ": ".join(p for p in (str(data.get("reason") or ""), reason or "") if p) or None
    event_id = _str_or_none(data.get("id")) or event_hash(
        "mailgun", json.dumps(data, sort_keys=True, default=str)
    )
    return [
        ProviderEvent(
            provider_event_id=event_id,
            provider_message_id=_strip_brackets(_str_or_none(message_id)),
            our_message_id=_our_id(user_vars.get("sb_message_id")) if isinstance(user_vars, dict) else None,
            status=status,
            kind=kind,
            reason=reason,
            recipient=_str_or_none(data.get("recipient")),
            suppress=suppress,
            occurred_at=_from_unix(data.get("timestamp"), now),
            raw=data,
        )
    ]


# --- Twilio status callback (form-encoded) ----------------------------------------------------

_TWILIO: dict[str, tuple[str, str | None]] = {
    "accepted": ("queued", "queued"),
    "scheduled": ("scheduled", None),
    "queued": ("queued", "queued"),
    "sending": ("sending", "sending"),
    "sent": ("sent", "sent"),
    "delivered": ("delivered", "delivered"),
    "read": ("read", "delivered"),  # read implies delivered, even if that callback is late
    "undelivered": ("undelivered", "failed"),
    "failed": ("failed", "failed"),
    "canceled": ("canceled", "failed"),
}
# Error codes that say the number itself cannot receive: STOP reply, and unreachable numbers.
_TWILIO_SUPPRESS = {
    "21610": "unsubscribe",  # the recipient replied STOP
    "21211": "bounce",  # invalid 'To' number
    "21614": "bounce",  # 'To' is not a mobile number
    "30005": "bounce",  # unknown destination handset
    "30006": "bounce",  # landline or unreachable carrier
}


def parse_twilio(body: bytes, now: dt.datetime) -> list[ProviderEvent]:
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        form: dict[str, str] = storable(dict(pairs))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPayload("a Twilio callback is form-encoded") from exc
    sid, name = (
        form.get("MessageSid") or form.get("SmsSid"),
        form.get("MessageStatus") or form.get("SmsStatus"),
    )
    if not sid or not name:
        raise MalformedPayload("a Twilio status callback has MessageSid and MessageStatus")
    kind, status = _TWILIO.get(name, (name, None))
    code = form.get("ErrorCode") or None
    reason = None
    if code:
        reason = f"error {code}" + (f": {form['ErrorMessage']}" if form.get("ErrorMessage") else "")
    return [
        ProviderEvent(
            provider_event_id=event_hash("twilio", sid, name, code),
            provider_message_id=sid,
            our_message_id=None,
            status=status,
            kind=kind,
            reason=reason,
            # WhatsApp through Twilio says `whatsapp:+1…`: the number is what a suppression names.
            recipient=form.get("To", "").removeprefix("whatsapp:") or None,
            suppress=_TWILIO_SUPPRESS.get(code or "") if status == "failed" else None,
            occurred_at=now,
            raw=form,
        )
    ]


# --- WhatsApp Cloud API (entry[].changes[].value.statuses[]) ----------------------------------

_WHATSAPP: dict[str, tuple[str, str | None]] = {
    "sent": ("sent", "sent"),
    "delivered": ("delivered", "delivered"),
    "read": ("read", "delivered"),
    "failed": ("failed", "failed"),
}


def _whatsapp_status(item: Any, now: dt.datetime) -> ProviderEvent:
    if not isinstance(item, dict) or not item.get("id") or not isinstance(item.get("status"), str):
        raise MalformedPayload("each WhatsApp status has an `id` and a `status`")
    wamid, name = str(item["id"]), item["status"]
    kind, status = _WHATSAPP.get(name, (name, None))
    errors = item.get("errors")
    reason = None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        err = errors[0]
        details = (
            err.get("error_data", {}).get("details") if isinstance(err.get("error_data"), dict) else None
        )
        text = err.get("message") or err.get("title")
        reason = (
            f"error {err.get('code')}: {details or text}"
            if err.get("code")
            else _str_or_none(details or text)
        )
    recipient = _str_or_none(item.get("recipient_id"))
    if recipient and not recipient.startswith("+"):
        recipient = "+" + recipient  # WhatsApp ids are E.164 digits without the plus
    return ProviderEvent(
        provider_event_id=event_hash("whatsapp", wamid, name),
        provider_message_id=wamid,
        # The send puts its idempotency key in `biz_opaque_callback_data`; Meta echoes it back.
        our_message_id=_our_id(item.get("biz_opaque_callback_data")),
        status=status,
        kind=kind,
        reason=reason,
        recipient=recipient,
        suppress=None,
        occurred_at=_from_unix(item.get("timestamp"), now),
        raw=item,
    )


def parse_whatsapp(body: bytes, now: dt.datetime) -> list[ProviderEvent]:
    doc = _json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("entry"), list):
        raise MalformedPayload("a WhatsApp webhook has an `entry` array")
    events: list[ProviderEvent] = []
    for entry in doc["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise MalformedPayload("each WhatsApp entry has a `changes` array")
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                raise MalformedPayload("each WhatsApp change has a `value` object")
            statuses = value.get("statuses", [])  # inbound `messages` are not status events
            if not isinstance(statuses, list):
                raise MalformedPayload("`statuses` must be an array")
            events.extend(_whatsapp_status(s, now) for s in statuses)
    return events


# --- sandbox (our own demo provider) ----------------------------------------------------------

_SANDBOX: dict[str, tuple[str, str | None, str | None]] = {
    "queued": ("queued", "queued", None),
    "sending": ("sending", "sending", None),
    "sent": ("sent", "sent", None),
    "delivered": ("delivered", "delivered", None),
    "bounced": ("bounced", "bounced", "bounce"),
    "failed": ("failed", "failed", None),
    "deferred": ("deferred", None, None),
    "opened": ("opened", None, None),
    "clicked": ("clicked", None, None),
    "read": ("read", "delivered", None),
    "spam": ("spam", None, "spam"),
    "complained": ("spam", None, "spam"),
    "unsubscribed": ("unsubscribed", None, "unsubscribe"),
}


def _sandbox_event(item: Any, now: dt.datetime) -> ProviderEvent:
    if (
        not isinstance(item, dict)
        or not _str_or_none(item.get("id"))
        or not isinstance(item.get("status"), str)
        or not _str_or_none(item.get("message_id"))
    ):
        raise MalformedPayload("each sandbox event has an `id`, a `message_id` and a `status`")
    name: str = item["status"]
    kind, status, suppress = _SANDBOX.get(name, (name, None, None))
    return ProviderEvent(
        provider_event_id=str(item["id"]),
        provider_message_id=str(item["message_id"]),
        our_message_id=None,
        status=status,
        kind=kind,
        reason=_str_or_none(item.get("reason")),
        recipient=_str_or_none(item.get("recipient")),
        suppress=suppress,
        occurred_at=_from_unix(item.get("timestamp"), now),
        raw=item,
    )


def parse_sandbox(body: bytes, now: dt.datetime) -> list[ProviderEvent]:
    doc = _json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise MalformedPayload('a sandbox webhook is {"events": [...]}')
    return [_sandbox_event(item, now) for item in doc["events"]]


PARSERS: dict[str, Callable[[bytes, dt.datetime], list[ProviderEvent]]] = {
    "sendgrid": parse_sendgrid,
    "mailgun": parse_mailgun,
    "twilio": parse_twilio,
    "whatsapp": parse_whatsapp,
    "sandbox": parse_sandbox,
}


def parse(kind: str, body: bytes, *, now: dt.datetime) -> list[ProviderEvent]:
    """The events in a verified webhook body; raises `MalformedPayload` when it is not one.

    `now` stands in for the time of events that carry none (Twilio)."""
    parser = PARSERS.get(kind)
    if parser is None:
        raise MalformedPayload(f"{kind} connections do not receive webhooks")
    return parser(body, now)

"""Twilio incoming SMS/MMS and WhatsApp-via-Twilio (form-encoded, posted to the connection's URL).

Told apart from status callbacks by what Twilio sends: an incoming message has `SmsStatus=received`
(or no status at all) and never a `MessageStatus`."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

from server.conversations.inbound import Attachment, Inbound, MalformedInbound, no_nul

WHATSAPP_PREFIX = "whatsapp:"
MAX_MEDIA = 10  # Twilio delivers at most 10 media per message


def form_of(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedInbound("a Twilio request is form-encoded") from exc
    return {k: no_nul(v) for k, v in pairs}


def is_incoming(form: dict[str, str]) -> bool:
    """Whether a verified Twilio POST is an incoming message rather than a status callback."""
    return "MessageStatus" not in form and form.get("SmsStatus", "received") == "received" and "From" in form


def incoming_form(body: bytes) -> dict[str, str] | None:
    """The form of a verified Twilio POST when it is an incoming message (parsed once, for `parse`)."""
    try:
        form = form_of(body)
    except MalformedInbound:
        return None
    return form if is_incoming(form) else None


def _address(raw: str) -> tuple[str, str]:
    """(channel, E.164) from `+1555…` or `whatsapp:+1555…`."""
    raw = raw.strip()
    if raw.lower().startswith(WHATSAPP_PREFIX):
        return "whatsapp", raw[len(WHATSAPP_PREFIX) :].strip()
    return "sms", raw


def parse(body: bytes | dict[str, str], now: dt.datetime) -> Inbound:
    """An incoming message from its body, or from its form already read (`incoming_form`)."""
    form = form_of(body) if isinstance(body, bytes) else body
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid")
    if not sid or not form.get("From"):
        raise MalformedInbound("a Twilio incoming message has MessageSid and From")
    channel, sender = _address(form["From"])
    _, recipient = _address(form.get("To", ""))
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    media = []
    for n in range(count):
        url = form.get(f"MediaUrl{n}")
        if not url:
            continue
        media_sid = urlsplit(url).path.rstrip("/").rpartition("/")[2] or None
        media.append(
            Attachment(
                name=media_sid or f"media{n}",
                content_type=form.get(f"MediaContentType{n}") or "application/octet-stream",
                url=url,
                provider_media_id=media_sid,
            )
        )
    text = form.get("Body", "")
    meta = {
        k: form[k]
        # OptOutType: Twilio Advanced Opt-Out's verdict on a keyword (server/consent/keywords.py)
        for k in ("ProfileName", "WaId", "NumSegments", "ButtonText", "ButtonPayload", "OptOutType")
        if form.get(k)
    }
    return Inbound(
        channel=channel,
        provider_message_id=sid[:200],
        sender=sender,
        recipient=recipient,
        text=text,
        full_text=text,
        attachments=tuple(media),
        sender_name=form.get("ProfileName", ""),
        meta=meta,
        received_at=now,
    )

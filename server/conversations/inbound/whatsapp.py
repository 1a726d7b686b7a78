"""WhatsApp Cloud API `messages` (beside `statuses` in the same webhook): text, media (image,
document, audio, video, sticker: media id, mime type, caption), interactive button/list replies,
template quick-reply buttons, reactions and locations, with the sender's profile name."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from server.conversations.inbound import Attachment, Inbound, MalformedInbound, no_nul

MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")


def _doc(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInbound("body is not JSON") from exc


def _e164(wa_id: Any) -> str:
    digits = "".join(ch for ch in str(wa_id or "") if ch.isdigit())
    return f"+{digits}" if digits else ""


def _s(value: Any) -> str:
    return no_nul(value) if isinstance(value, str) else ""


def _time(value: Any, default: dt.datetime) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(value), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return default


def _content(item: dict[str, Any]) -> tuple[str, tuple[Attachment, ...], dict[str, Any]]:
    """(text, attachments, meta) of one message, by its `type`."""
    kind = _s(item.get("type")) or "unknown"
    meta: dict[str, Any] = {"type": kind}
    if kind == "text":
        text = item.get("text")
        return _s(text.get("body") if isinstance(text, dict) else None), (), meta
    if kind in MEDIA_TYPES:
        media = item.get(kind) if isinstance(item.get(kind), dict) else {}
        assert isinstance(media, dict)
        mime = _s(media.get("mime_type")) or "application/octet-stream"
        media_id = _s(media.get("id")) or None
        name = _s(media.get("filename")) or f"{kind}-{media_id or 'media'}"
        return _s(media.get("caption")), (Attachment(name, mime, provider_media_id=media_id),), meta
    if kind == "interactive":
        inter = item.get("interactive") if isinstance(item.get("interactive"), dict) else {}
        assert isinstance(inter, dict)
        sub = _s(inter.get("type"))
        reply = inter.get(sub) if isinstance(inter.get(sub), dict) else {}
        assert isinstance(reply, dict)
        meta["interactive"] = {"type": sub, "id": _s(reply.get("id")), "title": _s(reply.get("title"))}
        if reply.get("description"):
            meta["interactive"]["description"] = _s(reply.get("description"))
        return _s(reply.get("title")), (), meta
    if kind == "button":  # a template's quick-reply button
        button = item.get("button") if isinstance(item.get("button"), dict) else {}
        assert isinstance(button, dict)
        meta["button"] = {"payload": _s(button.get("payload")), "text": _s(button.get("text"))}
        return _s(button.get("text")), (), meta
    if kind == "reaction":
        reaction = item.get("reaction") if isinstance(item.get("reaction"), dict) else {}
        assert isinstance(reaction, dict)
        # An empty emoji takes a reaction back.
        meta["reaction"] = {"message_id": _s(reaction.get("message_id")), "emoji": _s(reaction.get("emoji"))}
        return _s(reaction.get("emoji")), (), meta
    if kind == "location":
        loc = item.get("location") if isinstance(item.get("location"), dict) else {}
        assert isinstance(loc, dict)
        meta["location"] = {k: loc.get(k) for k in ("latitude", "longitude", "name", "address") if k in loc}
        where = ", ".join(str(loc[k]) for k in ("name", "address") if loc.get(k))
        return f"[location] {where} ({loc.get('latitude')}, {loc.get('longitude')})".strip(), (), meta
    return f"[{kind} message]", (), meta


def parse(body: bytes, now: dt.datetime) -> list[Inbound]:
    """Every customer message in a verified Cloud API webhook (none when it carries only statuses)."""
    doc = _doc(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("entry"), list):
        raise MalformedInbound("a WhatsApp webhook has an `entry` array")
    out: list[Inbound] = []
    for entry in doc["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
                continue
            metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            assert isinstance(metadata, dict)
            ours = _e164(metadata.get("display_phone_number"))
            names = {
                _e164(c.get("wa_id")): _s((c.get("profile") or {}).get("name"))
                for c in value.get("contacts") or []
                if isinstance(c, dict) and isinstance(c.get("profile") or {}, dict)
            }
            for item in value["messages"]:
                if not isinstance(item, dict) or not item.get("id") or not item.get("from"):
                    raise MalformedInbound("each WhatsApp message has an `id` and a `from`")
                sender = _e164(item["from"])
                text, attachments, meta = _content(item)
                context = item.get("context")
                if isinstance(context, dict) and context.get("id"):
                    meta["context"] = {"id": _s(context.get("id")), "from": _s(context.get("from"))}
                meta["phone_number_id"] = _s(metadata.get("phone_number_id"))
                out.append(
                    Inbound(
                        channel="whatsapp",
                        provider_message_id=_s(item["id"])[:200],
                        sender=sender,
                        recipient=ours,
                        text=text,
                        full_text=text,
                        attachments=attachments,
                        sender_name=names.get(sender, ""),
                        meta=meta,
                        received_at=_time(item.get("timestamp"), now),
                    )
                )
    return out

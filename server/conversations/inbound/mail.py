"""Inbound email: Mailgun Routes `forward()` and SendGrid Inbound Parse (raw MIME), both
multipart/form-data, read with the standard library's `email` package (`policy.default`).

The display `text` is the plain part (or text made from the HTML part when there is none) with
the quoted history of a reply cut off; `full_text` keeps all of it. Attachments are listed by
name, type and size; their content is not kept (no blob store yet)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser

from server.conversations.inbound import Attachment, Inbound, MalformedInbound, no_nul

REPLY_LOCAL = re.compile(r"^reply\+([a-z0-9.]{3,80})$", re.IGNORECASE)
_MSGID = re.compile(r"<([^<>\s]{1,250})>")
MAX_REFERENCES = 50


# --- multipart/form-data, part by part (bytes kept: a raw MIME field may be in any charset) ----


class FormPart:
    __slots__ = ("content_type", "data", "filename", "name")

    def __init__(self, name: str, data: bytes, filename: str | None, content_type: str) -> None:
        self.name = name
        self.data = data
        self.filename = filename
        self.content_type = content_type

    @property
    def text(self) -> str:
        return no_nul(self.data.decode("utf-8", errors="replace"))


def read_form(content_type: str, body: bytes) -> list[FormPart]:
    """The parts of a multipart/form-data body, in order."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type.lower():
        raise MalformedInbound("inbound email arrives as multipart/form-data")
    head = b"Content-Type: " + content_type.encode("latin-1", errors="replace") + b"\r\n\r\n"
    container = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not container.is_multipart():
        raise MalformedInbound("the multipart body has no parts")
    parts = []
    for part in container.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        filename = part.get_filename()
        parts.append(
            FormPart(name, payload if isinstance(payload, bytes) else b"", filename, part.get_content_type())
        )
    return parts


SIGNATURE_FIELDS = frozenset({"timestamp", "token", "signature"})


def form_digest(parts: list[FormPart], *, skip: frozenset[str] = frozenset()) -> str:
    """A digest of the form's content that does not depend on the multipart boundary."""
    h = hashlib.sha256()
    for p in sorted(parts, key=lambda p: (p.name, p.filename or "", p.data)):
        if p.name not in skip:
            name, filename = p.name.encode(), (p.filename or "").encode()
            h.update(b"%d:%s|%d:%s|%d:" % (len(name), name, len(filename), filename, len(p.data)))
            h.update(p.data)
    return h.hexdigest()


def fields_of(parts: list[FormPart]) -> dict[str, str]:
    return {p.name: p.text for p in parts if p.filename is None}


# --- text from a message -----------------------------------------------------------------------


class _Text(HTMLParser):
    BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}
    )
    SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self, *, skip_quotes: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_quotes = skip_quotes
        self.hidden = 0  # depth inside skipped elements
        self.stack: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        quoted = self.skip_quotes and (tag == "blockquote" or "gmail_quote" in classes)
        hide = tag in self.SKIP or quoted
        if tag not in ("br", "img", "hr", "meta", "link", "input"):
            self.stack.append(hide)
            self.hidden += hide
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "img", "hr", "meta", "link", "input"):
            return
        if self.stack:
            self.hidden -= self.stack.pop()
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def html_to_text(html: str, *, skip_quotes: bool = False) -> str:
    parser = _Text(skip_quotes=skip_quotes)
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_ATTRIBUTION = re.compile(
    r"^\s*(On\s.{1,300}\swrote:|Le\s.{1,300}\sa écrit\s?:|Am\s.{1,300}\sschrieb\s.{0,100}:|.{1,200}\swrote:)\s*$",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine)\s*-{2,}\s*$", re.I
)
_OUTLOOK_FROM = re.compile(r"^\s*\*?From:\*?\s.+$", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*\*?(Sent|Date):\*?\s.+$", re.IGNORECASE)
_FORWARDED = re.compile(r"^\s*-{2,}\s*Forwarded message\s*-{2,}\s*$|^\s*Begin forwarded message:\s*$", re.I)


def strip_quoted(text: str) -> str:
    """The new part of a reply: cut at the quoted history ("On … wrote:", "-----Original
    Message-----", an Outlook header block, or a trailing run of `>` lines). A forwarded message is
    content, not history: it is kept. When nothing would be left, the whole text is."""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = len(lines)
    for i, line in enumerate(lines):
        if _FORWARDED.match(line):
            break
        joined = line + " " + lines[i + 1] if i + 1 < len(lines) else line
        if _ATTRIBUTION.match(line) or (line.lstrip().startswith("On ") and _ATTRIBUTION.match(joined)):
            cut = i
            break
        if _ORIGINAL.match(line) or (
            _OUTLOOK_FROM.match(line) and i + 1 < len(lines) and _OUTLOOK_NEXT.match(lines[i + 1])
        ):
            cut = i
            break
        if line.startswith(">") and all(not rest.strip() or rest.startswith(">") for rest in lines[i:]):
            cut = i
            break
    kept = "\n".join(lines[:cut]).rstrip()
    return kept if kept.strip() else text.strip()


def _decoded(part: Message) -> str:
    """A text part's content in its declared charset; an unknown charset falls back to UTF-8."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, KeyError):
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""


def _attachments(msg: EmailMessage, body_parts: set[int]) -> list[Attachment]:
    """Every attached file, and each attached message (forwarded as attachment) as one entry:
    the parts inside an attached message are its own, not ours to list."""
    out: list[Attachment] = []
    inside: set[int] = set()
    for part in msg.walk():
        if part is msg or id(part) in body_parts or id(part) in inside:
            continue
        ctype = part.get_content_type()
        filename = part.get_filename()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            for sub in part.walk():
                if sub is not part:
                    inside.add(id(sub))
            size = len(first.as_bytes()) if isinstance(first, Message) else None
            subject = str(first.get("subject", "")) if isinstance(first, Message) else ""
            out.append(Attachment(no_nul(filename or f"{subject or 'message'}.eml"), ctype, size))
            continue
        if part.is_multipart():
            continue
        if not (filename or part.get_content_disposition() == "attachment"):
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else None
        out.append(Attachment(no_nul(filename or "attachment"), ctype, size))
    return out


def message_ids(*values: str | None) -> tuple[str, ...]:
    """Message-Ids from In-Reply-To / References values, brackets removed, in order, no repeats."""
    seen: dict[str, None] = {}
    for value in values:
        for found in _MSGID.findall(value or ""):
            seen.setdefault(found, None)
    return tuple(seen)[:MAX_REFERENCES]


def reply_tokens(addresses: list[str]) -> tuple[str, ...]:
    tokens = []
    for addr in addresses:
        local = addr.rpartition("@")[0]
        if m := REPLY_LOCAL.match(local):
            tokens.append(m.group(1).lower())
    return tuple(dict.fromkeys(tokens))


def _our_address(addresses: list[str]) -> str:
    """The address the customer wrote to; a reply+ address says nothing to answer from."""
    plain = [a for a in addresses if a and not REPLY_LOCAL.match(a.rpartition("@")[0])]
    return (plain or addresses or [""])[0]


def _addresses(*values: str | None) -> list[str]:
    return [a.strip().lower() for _n, a in getaddresses([v for v in values if v]) if "@" in a]


def from_mime(
    raw: bytes, *, provider_message_id: str | None, now: dt.datetime, envelope_to: list[str]
) -> Inbound:
    """An `Inbound` from a whole RFC 5322 message."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    plain = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    body_parts = {id(p) for p in (plain, html_part) if p is not None}
    html = no_nul(_decoded(html_part)) if html_part is not None else None
    if plain is not None:
        full = no_nul(_decoded(plain))
        display = strip_quoted(full)
    elif html is not None:
        full = html_to_text(html)
        display = strip_quoted(html_to_text(html, skip_quotes=True) or full)
    else:
        full = display = ""
    name, sender = parseaddr(str(msg.get("from", "")))
    if "@" not in sender:
        raise MalformedInbound("the message has no From address")
    to = _addresses(str(msg.get("to", "")), str(msg.get("cc", "")), str(msg.get("delivered-to", "")))
    msgid = message_ids(str(msg.get("message-id", "")))
    pmid = provider_message_id or (msgid[0] if msgid else None)
    if not pmid:
        raise MalformedInbound("the message has no Message-Id")
    received = now
    if msg.get("date"):
        try:
            received = parsedate_to_datetime(str(msg["date"])) or now
            received = received if received.tzinfo else received.replace(tzinfo=dt.UTC)
        except (TypeError, ValueError):
            received = now
    attachments = _attachments(msg, body_parts)
    return Inbound(
        channel="email",
        provider_message_id=pmid[:200],
        sender=sender.strip().lower(),
        recipient=_our_address(envelope_to + to),
        text=display,
        full_text=full,
        html=html,
        subject=no_nul(str(msg.get("subject", ""))),
        attachments=tuple(attachments),
        sender_name=no_nul(name),
        references=message_ids(
            str(msg.get("in-reply-to", "")), *reversed(str(msg.get("references", "")).split())
        ),
        reply_tokens=reply_tokens(envelope_to + to),
        meta={"message_id": msgid[0] if msgid else pmid},
        received_at=received if abs((received - now).total_seconds()) < 7 * 86400 else now,
    )


# --- SendGrid Inbound Parse ("POST the raw, full MIME message") -------------------------------


def parse_sendgrid(parts: list[FormPart], now: dt.datetime) -> Inbound:
    raw = next((p.data for p in parts if p.name == "email"), None)
    if raw is None:
        raise MalformedInbound("SendGrid Inbound Parse must post the raw MIME message (`email`)")
    fields = fields_of(parts)
    envelope_to: list[str] = []
    try:
        env = json.loads(fields.get("envelope") or "{}")
        if isinstance(env, dict) and isinstance(env.get("to"), list):
            envelope_to = [str(a).strip().lower() for a in env["to"] if isinstance(a, str)]
    except ValueError:
        pass
    return from_mime(raw, provider_message_id=None, now=now, envelope_to=envelope_to)


# --- Mailgun Routes forward() -----------------------------------------------------------------


def mailgun_signature(parts: list[FormPart]) -> dict[str, str]:
    fields = fields_of(parts)
    return {k: fields.get(k, "") for k in ("timestamp", "token", "signature")}


def parse_mailgun(parts: list[FormPart], now: dt.datetime) -> Inbound:
    """Mailgun has parsed the message already (UTF-8 fields, `stripped-text` without the quote)."""
    f = fields_of(parts)
    name, sender = parseaddr(f.get("from") or f.get("From") or f.get("sender", ""))
    sender = sender or f.get("sender", "")
    if "@" not in sender:
        raise MalformedInbound("a Mailgun route post has a `sender`")
    msgid = message_ids(f.get("Message-Id") or f.get("message-id") or "")
    if not msgid:
        raise MalformedInbound("a Mailgun route post has a `Message-Id`")
    full = f.get("body-plain", "")
    html = f.get("body-html") or None
    if not full and html:
        full = html_to_text(html)
    display = (
        f.get("stripped-text")
        or (html_to_text(f.get("stripped-html") or "", skip_quotes=True) if not f.get("body-plain") else "")
        or strip_quoted(full)
    )
    recipients = _addresses(f.get("recipient", "")) + _addresses(f.get("To", ""), f.get("Cc", ""))
    attachments = tuple(
        Attachment(no_nul(p.filename or "attachment"), p.content_type, len(p.data))
        for p in parts
        if p.filename is not None
    )
    return Inbound(
        channel="email",
        provider_message_id=msgid[0][:200],
        sender=sender.strip().lower(),
        recipient=_our_address(recipients),
        text=display,
        full_text=full,
        html=html,
        subject=f.get("subject") or f.get("Subject", ""),
        attachments=attachments,
        sender_name=name,
        references=message_ids(f.get("In-Reply-To"), *reversed((f.get("References") or "").split())),
        reply_tokens=reply_tokens(recipients),
        meta={"message_id": msgid[0]},
        received_at=now,
    )

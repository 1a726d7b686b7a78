"""A Switchboard template's approved WhatsApp template: what goes out outside the 24-hour window.

WhatsApp delivers free-form text only within 24 hours of the customer's last message; any other
message must be a template Meta has approved. A Switchboard template on the `whatsapp` channel may
name one (`whatsapp`: `{"name"?, "language"?, "content_sid"?, "parameters", "header"?,
"buttons"?}`): for the Cloud API by its name and language, for Twilio by the Content SID of the
Content API template it was approved as, or both (a workspace may reach customers both ways).
Body parameters (Twilio's ContentVariables "1", "2", … in order), the header's one parameter (its
text, or its image, document or video: the link Meta fetches it from, or with `source: "id"` the
id of a media uploaded to Meta, and a document's `filename`) and the parameter of each button that
takes one (a quick reply's payload, a URL button's suffix) are each a small template rendered by
`render` with the body's sandbox, context and budget. A message keeps what was rendered
(`message.whatsapp_template`), so a retry sends the same; its `body` stays the readable text for
the timeline."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.templates import render

NAME = re.compile(r"[a-z0-9_]{1,512}")  # Meta: lowercase letters, digits and underscores
LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")  # Meta's codes: en, en_US, pt_BR, fil
MAX_PARAMETERS = 20
EMPTY_PARAMETER = "is empty (WhatsApp refuses an empty parameter)"
MEDIA = frozenset({"image", "document", "video"})
# Meta fetches a media header from its link, over HTTP or HTTPS; one line, no spaces.
LINK = re.compile(r"https?://[^\s/?#]+[^\s]*")
NOT_A_LINK = "is not an http(s) link (a media header is sent as the link Meta fetches it from)"
# A media uploaded to Meta (`POST /{phone_number_id}/media`) is sent by the id it answered: digits.
MEDIA_ID = re.compile(r"[0-9]{1,64}")
NOT_AN_ID = "is not a media id (the digits Meta's media upload answered)"
HEADER_FIELD = "whatsapp.header.parameter"
FILENAME_FIELD = "whatsapp.header.filename"
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")  # Twilio Content API: HX + 32 hex digits


def field(index: int) -> str:
    return f"whatsapp.parameters[{index}]"


def button_field(position: int) -> str:
    return f"whatsapp.buttons[{position}].parameter"


def _parts(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every parameter's `(field, source)`: the body's, the header's, the buttons'."""
    parts = [(field(i), p) for i, p in enumerate(meta.get("parameters") or [])]
    header = meta.get("header")
    if header:
        parts.append((HEADER_FIELD, header["parameter"]))
        if header.get("filename"):
            parts.append((FILENAME_FIELD, header["filename"]))
    parts.extend((button_field(i), b["parameter"]) for i, b in enumerate(meta.get("buttons") or []))
    return parts


def media_problem(source: str, value: str) -> str | None:
    """Why a media header's rendered value cannot be sent as its `source` says (None: it can)."""
    if source == "id":
        return None if MEDIA_ID.fullmatch(value) else NOT_AN_ID
    return None if LINK.fullmatch(value) else NOT_A_LINK


async def validate(meta: Mapping[str, Any]) -> None:
    """`render.TemplateInvalid` for a parameter that is not a valid template (syntax, sandbox,
    deadline), or a media header's parameter that is literal text and no http(s) link (no media
    id with `source: "id"`); names, languages, SIDs, types, indexes and counts are checked by the
    schema."""
    header = meta.get("header")
    if header and header["type"] in MEDIA:
        value = header["parameter"]
        if "{" not in value and (why := media_problem(header.get("source", "link"), value.strip())):
            raise render.TemplateInvalid([{"field": HEADER_FIELD, "message": why}])
    await render.validate_parts(_parts(meta))


def sources(meta: Mapping[str, Any] | None) -> list[str]:
    """The parameters' sources (for `render.names_used`)."""
    return [source for _, source in _parts(meta or {})]


@dataclass(frozen=True, slots=True)
class Header:
    type: str  # text | image | document | video
    parameter: render.CompiledPart
    source: str = "link"  # a media header's parameter: link | id
    filename: render.CompiledPart | None = None  # a document's file name


@dataclass(frozen=True, slots=True)
class CompiledApproved:
    name: str | None  # the Cloud API's template name and language (None: Twilio only)
    language: str | None
    parameters: tuple[render.CompiledPart, ...]
    header: Header | None = None
    buttons: tuple[tuple[str, int, render.CompiledPart], ...] = ()  # (sub_type, index, parameter)
    content_sid: str | None = None  # Twilio's Content API template (None: Cloud API only)

    def sends_with(self, kind: str) -> bool:
        """Whether a provider of this kind can send it: the Cloud API by name, Twilio by SID."""
        return self.content_sid is not None if kind == "twilio" else self.name is not None

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """`{"name"?, "language"?, "content_sid"?, "parameters": [str, ...], "header"?: {"type",
        "parameter", "source"?: "id", "filename"?}, "buttons"?: [{"sub_type", "index",
        "parameter"}, ...]}` (the shape the WhatsApp and Twilio adapters send);
        `render.RenderError` when a parameter does not render, renders empty, or a media header
        renders no http(s) link (no media id)."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"], out["language"] = self.name, self.language
        if self.content_sid is not None:
            out["content_sid"] = self.content_sid
        out["parameters"] = [_text(part, context) for part in self.parameters]
        if (h := self.header) is not None:
            text = _text(h.parameter, context)
            if h.type in MEDIA and (why := media_problem(h.source, text)):
                raise render.RenderError(h.parameter.field, why)
            header: dict[str, Any] = {"type": h.type, "parameter": text}
            if h.source != "link":
                header["source"] = h.source
            if h.filename is not None:
                header["filename"] = _text(h.filename, context)
            out["header"] = header
        if self.buttons:
            out["buttons"] = [
                {"sub_type": sub_type, "index": index, "parameter": _text(part, context)}
                for sub_type, index, part in self.buttons
            ]
        return out


def _text(part: render.CompiledPart, context: Mapping[str, Any]) -> str:
    text = render.one_line(part.render(context))
    if not text:
        raise render.RenderError(part.field, EMPTY_PARAMETER)
    return text


def compile_approved(meta: Mapping[str, Any] | None) -> CompiledApproved | None:
    """None for a template without WhatsApp metadata; `render.TemplateInvalid` for a bad parameter."""
    if not meta:
        return None
    compiled = iter(render.compile_parts(_parts(meta)))
    parameters = tuple(next(compiled) for _ in meta.get("parameters") or [])
    header = None
    if h := meta.get("header"):
        header = Header(
            str(h["type"]),
            next(compiled),
            str(h.get("source") or "link"),
            next(compiled) if h.get("filename") else None,
        )
    return CompiledApproved(
        str(meta["name"]) if meta.get("name") else None,
        str(meta["language"]) if meta.get("name") else None,
        parameters,
        header,
        tuple((str(b["sub_type"]), int(b["index"]), next(compiled)) for b in meta.get("buttons") or []),
        str(meta["content_sid"]) if meta.get("content_sid") else None,
    )

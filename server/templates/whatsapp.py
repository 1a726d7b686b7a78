"""A Switchboard template's approved WhatsApp template: what goes out outside the 24-hour window.

WhatsApp delivers free-form text only within 24 hours of the customer's last message; any other
message must be a template Meta has approved, sent by name and language with its parameters. A
Switchboard template on the `whatsapp` channel may name one (`whatsapp`: `{"name", "language",
"parameters", "header"?, "buttons"?}`): body parameters, the header's one parameter (its text, or
the link of its image, document or video) and the parameter of each button that takes one (a
quick reply's payload, a URL button's suffix). Each parameter is itself a small template rendered
by `render` with the body's sandbox, context and budget. A message keeps what was rendered
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
HEADER_FIELD = "whatsapp.header.parameter"


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
    parts.extend((button_field(i), b["parameter"]) for i, b in enumerate(meta.get("buttons") or []))
    return parts


async def validate(meta: Mapping[str, Any]) -> None:
    """`render.TemplateInvalid` for a parameter that is not a valid template (syntax, sandbox,
    deadline), or a media header's link that is literal text and no http(s) link; names,
    languages, types, indexes and counts are checked by the schema."""
    header = meta.get("header")
    if header and header["type"] in MEDIA:
        source = header["parameter"]
        if "{" not in source and not LINK.fullmatch(source.strip()):
            raise render.TemplateInvalid([{"field": HEADER_FIELD, "message": NOT_A_LINK}])
    await render.validate_parts(_parts(meta))


def sources(meta: Mapping[str, Any] | None) -> list[str]:
    """The parameters' sources (for `render.names_used`)."""
    return [source for _, source in _parts(meta or {})]


@dataclass(frozen=True, slots=True)
class CompiledApproved:
    name: str
    language: str
    parameters: tuple[render.CompiledPart, ...]
    header: tuple[str, render.CompiledPart] | None = None  # (type, its parameter)
    buttons: tuple[tuple[str, int, render.CompiledPart], ...] = ()  # (sub_type, index, parameter)

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """`{"name", "language", "parameters": [str, ...], "header"?: {"type", "parameter"},
        "buttons"?: [{"sub_type", "index", "parameter"}, ...]}` (the shape the WhatsApp adapter
        sends); `render.RenderError` when a parameter does not render, renders empty, or a media
        header renders no http(s) link."""
        out: dict[str, Any] = {
            "name": self.name,
            "language": self.language,
            "parameters": [_text(part, context) for part in self.parameters],
        }
        if self.header is not None:
            kind, part = self.header
            text = _text(part, context)
            if kind in MEDIA and not LINK.fullmatch(text):
                raise render.RenderError(part.field, NOT_A_LINK)
            out["header"] = {"type": kind, "parameter": text}
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
    header = meta.get("header")
    return CompiledApproved(
        str(meta["name"]),
        str(meta["language"]),
        parameters,
        (str(header["type"]), next(compiled)) if header else None,
        tuple((str(b["sub_type"]), int(b["index"]), next(compiled)) for b in meta.get("buttons") or []),
    )

"""A Switchboard template's approved WhatsApp template: what goes out outside the 24-hour window.

WhatsApp delivers free-form text only within 24 hours of the customer's last message; any other
message must be a template Meta has approved, sent by name and language with its body parameters.
A Switchboard template on the `whatsapp` channel may name one (`whatsapp`: `{"name", "language",
"parameters"}`); each parameter is itself a small template rendered by `render` with the body's
sandbox and context. A message keeps what was rendered (`message.whatsapp_template`), so a retry
sends the same; its `body` stays the readable text for the timeline."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.templates import render

NAME = re.compile(r"[a-z0-9_]{1,512}")  # Meta: lowercase letters, digits and underscores
LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")  # Meta's codes: en, en_US, pt_BR, fil
MAX_PARAMETERS = 20
EMPTY_PARAMETER = "is empty (WhatsApp refuses an empty parameter)"


def field(index: int) -> str:
    return f"whatsapp.parameters[{index}]"


async def validate(meta: Mapping[str, Any]) -> None:
    """`render.TemplateInvalid` for a parameter that is not a valid template (syntax, sandbox,
    deadline); the name, language and count are checked by the schema."""
    await render.validate_parts([(field(i), p) for i, p in enumerate(meta.get("parameters") or [])])


def sources(meta: Mapping[str, Any] | None) -> list[str]:
    """The parameters' sources (for `render.names_used`)."""
    return list((meta or {}).get("parameters") or [])


@dataclass(frozen=True, slots=True)
class CompiledApproved:
    name: str
    language: str
    parameters: tuple[render.CompiledPart, ...]

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """`{"name", "language", "parameters": [str, ...]}` (the shape the WhatsApp adapter sends);
        `render.RenderError` when a parameter does not render or renders empty."""
        texts = []
        for part in self.parameters:
            text = render.one_line(part.render(context))
            if not text:
                raise render.RenderError(part.field, EMPTY_PARAMETER)
            texts.append(text)
        return {"name": self.name, "language": self.language, "parameters": texts}


def compile_approved(meta: Mapping[str, Any] | None) -> CompiledApproved | None:
    """None for a template without WhatsApp metadata; `render.TemplateInvalid` for a bad parameter."""
    if not meta:
        return None
    parameters: Sequence[str] = meta.get("parameters") or []
    compiled = render.compile_parts([(field(i), p) for i, p in enumerate(parameters)])
    return CompiledApproved(str(meta["name"]), str(meta["language"]), tuple(compiled))

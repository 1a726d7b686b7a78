"""The short way for plain templates gives exactly what the sandbox gives: the same text, or the
same error, for every template and context below (each is rendered both ways and compared)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from server.templates import render
from server.templates.sandbox import MAX_OUTPUT

CONTACT = {"name": "Ada", "email": "ada@example.test", "phone": "", "attributes": {}, "tags": []}

TEMPLATES = [
    "Hello {{ name }}",
    "Hello {{ name }}!\n",  # the trailing newline is kept (keep_trailing_newline)
    "{{ contact.email }} / {{ contact['name'] }}",
    "Plan: {{ attributes.plan }}, seats {{ attributes['seats'] }}",
    "{{ attributes.profile.city }}",
    "  {{- name -}}  and  {{ email }}",
    "{{ missing }}",
    "{{ attributes.items }}",  # a dict method to Jinja
    "{{ attributes['items'] }}",
    "{{ tags }}",
    "{{ attributes.nested }}",
    "{{ n }} {{ f }} {{ yes }} {{ nothing }}",
    "{{ big }}",
    "{{ nul }}",
    "{{ long }}{{ long }}",
    "no variables at all",
    "",
    "{{ range }}",
    "{% if name %}{{ name }}{% endif %}",  # not plain: always the sandbox
    "{{ name | upper }}",
]

CONTEXTS: list[dict[str, Any]] = [
    render.context_for(CONTACT, {}),
    render.context_for(
        {**CONTACT, "attributes": {"plan": "pro", "seats": 3, "items": "x", "profile": {"city": "Oslo"}}}, {}
    ),
    render.context_for(
        {**CONTACT, "attributes": {"plan": None, "profile": "flat", "nested": {"a": 1}}},
        {"n": 7, "f": 1.5, "yes": True, "nothing": None, "missing": "here", "nul": "a\x00b"},
    ),
    render.context_for(CONTACT, {"big": 10**5000, "long": "x" * (MAX_OUTPUT // 2 + 1)}),
    {"name": "no contact", "email": "e"},
]


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except render.RenderError as exc:
        return "error", exc.reason


def _sandbox(subject: str, body: str, context: dict[str, Any]) -> tuple[str, str]:
    compiled = render.compile_message(subject, body)
    # The same compiled templates without their plain pieces: the sandbox's answer.
    slow = render.CompiledMessage(compiled.subject, compiled.body)
    return slow.render(context)


@pytest.mark.parametrize(("source", "context"), list(itertools.product(TEMPLATES, CONTEXTS)))
def test_plain_way_answers_as_the_sandbox_does(source: str, context: dict[str, Any]) -> None:
    fast = _outcome(render.compile_message(source, source).render, context)
    slow = _outcome(_sandbox, source, source, context)
    assert fast == slow


def test_which_templates_are_plain() -> None:
    assert render.plain_pieces("Hi {{ name }}!") == ("Hi ", ("name",), "!")
    assert render.plain_pieces("{{ contact['email'] }}") == (("contact", "email"),)
    for not_plain in (
        "{{ name | upper }}",
        "{% if x %}y{% endif %}",
        "{{ tags[0] }}",
        "{{ a.items }}",
        "{{ 'x' }}",
    ):
        assert render.plain_pieces(not_plain) is None, not_plain

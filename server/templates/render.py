"""Rendering message subjects and bodies with Jinja2 in a sandbox with a work budget.

Templates are written by users, so they run in `sandbox.BudgetedSandbox`: no dunders, internals,
unsafe callables, and a bounded amount of work and output per render. A template is checked when
it is saved (syntax, dunder names, and a trial render that trips the sandbox or the budget) in a
worker process with a deadline (`pool.py`), so nothing a template does can hold the event loop;
messages are rendered in-process under the budget. A variable missing when a message is
rendered is that message's failure reason, never a crash."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, TemplateError

from server.templates.pool import DEADLINE, DEADLINE_PER_CHAR, DeadlineExceeded, RenderPool
from server.templates.sandbox import MAX_OUTPUT, BudgetedSandbox, BudgetExceeded, budgeted

CONTACT_FIELDS = ("name", "email", "phone", "attributes", "tags")
_SPACES = re.compile(r"\s+")


class TemplateInvalid(Exception):
    """A template that cannot be saved: `errors` as `[{"field": "body"|"subject", "message"}]`."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class RenderError(Exception):
    """One message could not be rendered; `reason` is what the message's status says."""

    def __init__(self, field: str, detail: str) -> None:
        detail = detail.replace("\x00", "")
        self.reason = f"template error in {field}: {detail}"
        super().__init__(self.reason)
        self.field = field
        self.detail = detail


_strict = BudgetedSandbox(StrictUndefined)
_trial = BudgetedSandbox(ChainableUndefined)


def _output(tpl: Template, context: Mapping[str, Any]) -> str:
    """Render one part under the current budget, stopping at `MAX_OUTPUT` characters. NUL is
    dropped: no provider or database wants it, and PostgreSQL refuses it in text."""
    out: list[str] = []
    size = 0
    for chunk in tpl.generate(context):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise BudgetExceeded(f"the rendered text is longer than {MAX_OUTPUT} characters")
        out.append(chunk)
    return "".join(out).replace("\x00", "")


def _compile(env: BudgetedSandbox, field: str, source: str) -> Template:
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid([{"field": field, "message": f"line {exc.lineno}: {exc.message}"}]) from None
    except SecurityError as exc:
        raise TemplateInvalid([{"field": field, "message": f"not allowed: {exc}"}]) from None


def _check_part(field: str, source: str) -> list[dict[str, str]]:
    try:
        tpl = _compile(_trial, field, source)
        with budgeted():
            _output(tpl, {})
    except TemplateInvalid as exc:
        return exc.errors
    except SecurityError as exc:
        return [{"field": field, "message": f"not allowed: {exc}"}]
    except Exception:  # data-dependent: reported per message when it happens for real
        pass
    return []


def check(subject: str, body: str) -> None:
    """Raise `TemplateInvalid` for a syntax error or an unsafe construct in either part, in this
    process (`validate` is the same off the event loop, with a deadline).

    The trial render treats every variable as present (and empty), so it runs the whole template
    whatever the data and reaches every attribute access; errors that depend on real data (a
    missing variable, adding text to a number) are left for send time."""
    errors = [
        e for field, source in (("subject", subject), ("body", body)) for e in _check_part(field, source)
    ]
    if errors:
        raise TemplateInvalid(errors)


_pool = RenderPool()


def _deadline(source: str) -> float:
    return DEADLINE + len(source) * DEADLINE_PER_CHAR


async def validate(subject: str, body: str) -> None:
    """`check` in a worker process: `TemplateInvalid` also when a part passes the deadline."""
    errors: list[dict[str, str]] = []
    for field, source in (("subject", subject), ("body", body)):
        try:
            errors.extend(await _pool.run(_check_part, field, source, deadline=_deadline(source)))
        except DeadlineExceeded as exc:
            errors.append({"field": field, "message": f"not allowed: {exc}"})
        except RuntimeError as exc:
            errors.append({"field": field, "message": f"not allowed: {exc}"})
    if errors:
        raise TemplateInvalid(errors)


def _render_part(field: str, tpl: Template, context: Mapping[str, Any]) -> str:
    try:
        with budgeted():
            return _output(tpl, context)
    except TemplateError as exc:
        raise RenderError(field, exc.message or exc.__class__.__name__) from None
    except Exception as exc:  # user code: any error is the message's failure
        raise RenderError(field, f"{exc.__class__.__name__}: {exc}") from None


def _one_line(subject: str) -> str:
    # A subject is one header line: newlines from data must not reach the provider.
    return _SPACES.sub(" ", subject).strip()


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """A subject and body compiled once, rendered for many contacts (campaigns)."""

    subject: Template
    body: Template

    def render(self, context: Mapping[str, Any]) -> tuple[str, str]:
        """(subject, body) under the work budget, in this process; `RenderError` with the reason
        if the data does not fit the template or the budget."""
        subject = _render_part("subject", self.subject, context)
        return _one_line(subject), _render_part("body", self.body, context)


def compile_message(subject: str, body: str) -> CompiledMessage:
    """Compile both parts (`TemplateInvalid` on a syntax error or a dunder name)."""
    errors: list[dict[str, str]] = []
    compiled: dict[str, Template] = {}
    for field, source in (("subject", subject), ("body", body)):
        try:
            compiled[field] = _compile(_strict, field, source)
        except TemplateInvalid as exc:
            errors.extend(exc.errors)
    if errors:
        raise TemplateInvalid(errors)
    return CompiledMessage(compiled["subject"], compiled["body"])


def names_used(subject: str, body: str) -> frozenset[str]:
    """The top-level names a message template reads (so a campaign renders once per distinct
    value of them, not once per contact)."""
    return frozenset(
        name for source in (subject, body) for name in meta.find_undeclared_variables(_strict.parse(source))
    )


def context_for(contact: Any | None, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The names a template sees: the message's variables, then the contact's fields (which win,
    so `{{ email }}` is always the recipient's), and the fields again under `contact`."""
    fields: dict[str, Any] = {}
    if contact is not None:
        for name in CONTACT_FIELDS:
            value = contact.get(name) if isinstance(contact, Mapping) else getattr(contact, name)
            fields[name] = value if value is not None else ""
    return {**variables, **fields, "contact": fields}


def render(subject: str, body: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """Compile and render once in this process; `TemplateInvalid` or `RenderError`."""
    return compile_message(subject, body).render(context)


def _isolated_part(field: str, source: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """("ok", text, "") or ("invalid"|"error", field, message): plain data, to cross the pipe."""
    try:
        return "ok", _render_part(field, _compile(_strict, field, source), context), ""
    except TemplateInvalid as exc:
        return "invalid", field, exc.errors[0]["message"]
    except RenderError as exc:
        return "error", field, exc.detail


async def render_isolated(subject: str, body: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """`render` in a worker process under the deadline (previews: one render, any data)."""
    out: list[str] = []
    for field, source in (("subject", subject), ("body", body)):
        try:
            status, first, message = await _pool.run(
                _isolated_part, field, source, dict(context), deadline=_deadline(source)
            )
        except (DeadlineExceeded, RuntimeError) as exc:
            raise RenderError(field, str(exc)) from None
        if status == "invalid":
            raise TemplateInvalid([{"field": first, "message": message}])
        if status == "error":
            raise RenderError(first, message)
        out.append(first)
    return _one_line(out[0]), out[1]

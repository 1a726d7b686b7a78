"""Rendering message subjects and bodies with Jinja2 in a sandbox.

Templates are written by users, so they run in `SandboxedEnvironment`: no access to dunder
attributes, internals or unsafe callables. A template is checked when it is saved (syntax, and a
trial render that trips the sandbox on unsafe constructs); a variable missing when a message is
rendered is that message's failure reason, never a crash."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment

CONTACT_FIELDS = ("name", "email", "phone", "attributes", "tags")
# Rendering runs on the event loop, so a template must not stall the API or the worker: each
# render may create at most WORK_BUDGET range items and repeated-sequence items in all (the
# sandbox's own limit is 100,000 per range() call, and loops nest).
WORK_BUDGET = 100_000
MAX_EXPONENT = 1_000
_budget: ContextVar[list[int] | None] = ContextVar("template_work_budget", default=None)
_SPACES = re.compile(r"\s+")


class TemplateInvalid(Exception):
    """A template that cannot be saved: `errors` as `[{"field": "body"|"subject", "message"}]`."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class RenderError(Exception):
    """One message could not be rendered; `reason` is what the message's status says."""

    def __init__(self, field: str, detail: str) -> None:
        self.reason = f"template error in {field}: {detail}"
        super().__init__(self.reason)
        self.field = field
        self.detail = detail


def _spend(items: int) -> None:
    left = _budget.get()
    if left is None:
        return
    left[0] -= items
    if left[0] < 0:
        raise SecurityError(f"the template does too much work (more than {WORK_BUDGET} loop or repeat items)")


@contextmanager
def _budgeted() -> Iterator[None]:
    token = _budget.set([WORK_BUDGET])
    try:
        yield
    finally:
        _budget.reset(token)


def _budgeted_range(*args: int) -> range:
    rng = range(*args)
    _spend(len(rng))
    return rng


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, undefined: type[Undefined]) -> None:
        super().__init__(undefined=undefined, autoescape=False, keep_trailing_newline=True)
        self.globals["range"] = _budgeted_range
        # lipsum(n) produces text of any length; templates have no use for it.
        del self.globals["lipsum"]

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Fail loudly instead of yielding an undefined value, so that the trial render (whose
        # undefined values are permissive) still sees the attempt.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is not allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _spend(len(seq) * max(n, 0))
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponents are limited to {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


_strict = _Sandbox(StrictUndefined)
_trial = _Sandbox(ChainableUndefined)


def _compile(env: _Sandbox, field: str, source: str) -> Template:
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid([{"field": field, "message": f"line {exc.lineno}: {exc.message}"}]) from None
    except SecurityError as exc:
        raise TemplateInvalid([{"field": field, "message": f"not allowed: {exc}"}]) from None


def check(subject: str, body: str) -> None:
    """Raise `TemplateInvalid` for a syntax error or an unsafe construct in either part.

    The trial render treats every variable as present (and empty), so it runs the whole template
    whatever the data and reaches every attribute access; errors that depend on real data (a
    missing variable, adding text to a number) are left for send time."""
    errors: list[dict[str, str]] = []
    for field, source in (("subject", subject), ("body", body)):
        try:
            tpl = _compile(_trial, field, source)
            with _budgeted():
                tpl.render()
        except TemplateInvalid as exc:
            errors.extend(exc.errors)
        except SecurityError as exc:
            errors.append({"field": field, "message": f"not allowed: {exc}"})
        except Exception:  # data-dependent: reported per message when it happens for real
            pass
    if errors:
        raise TemplateInvalid(errors)


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """A subject and body compiled once, rendered for many contacts (campaigns)."""

    subject: Template
    body: Template

    def render(self, context: Mapping[str, Any]) -> tuple[str, str]:
        """(subject, body); `RenderError` with the reason if the data does not fit the template."""
        out: list[str] = []
        for field, tpl in (("subject", self.subject), ("body", self.body)):
            try:
                with _budgeted():
                    out.append(tpl.render(context))
            except TemplateError as exc:
                raise RenderError(field, exc.message or exc.__class__.__name__) from None
            except Exception as exc:  # user code: any error is the message's failure
                raise RenderError(field, f"{exc.__class__.__name__}: {exc}") from None
        # A subject is one header line: newlines from data must not reach the provider.
        return _SPACES.sub(" ", out[0]).strip(), out[1]


def compile_message(subject: str, body: str) -> CompiledMessage:
    """Compile both parts (`TemplateInvalid` on a syntax error)."""
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
    """Compile and render once; `TemplateInvalid` or `RenderError`."""
    return compile_message(subject, body).render(context)

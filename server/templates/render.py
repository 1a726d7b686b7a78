"""Rendering message subjects and bodies with Jinja2 in a sandbox with a work budget.

Templates are written by users, so they run in `sandbox.BudgetedSandbox`: no dunders, internals,
unsafe callables, and a bounded amount of work and output per render. A template is checked when
it is saved (syntax, dunder names, and a trial render that trips the sandbox or the budget) in a
worker process with a deadline (`pool.py`), so nothing a template does can hold the event loop;
messages are rendered in-process under the budget. A variable missing when a message is
rendered is that message's failure reason, never a crash."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    ChainableUndefined,
    Environment,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    meta,
    nodes,
)
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


def names_used(*sources: str) -> set[str]:
    """The top-level variables these template parts read (a part that does not parse reads none:
    `check` says why). A campaign renders once per distinct value of them, not once per contact."""
    out: set[str] = set()
    for source in sources:
        try:
            out |= meta.find_undeclared_variables(_strict.parse(source))
        except TemplateError:
            pass
    return out


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
    await validate_parts((("subject", subject), ("body", body)))


async def validate_parts(parts: Sequence[tuple[str, str]]) -> None:
    """`validate` for any named parts, as `(field, source)`: the errors of all of them at once."""
    errors: list[dict[str, str]] = []
    for field, source in parts:
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


def one_line(text: str) -> str:
    """`text` with each run of whitespace as one space. A subject is one header line (newlines
    from data must not reach the provider), and so is a WhatsApp parameter (Meta refuses newlines,
    tabs and more than four spaces in a row)."""
    return _SPACES.sub(" ", text).strip()


# --- the short way for plain templates ------------------------------------------------------------
# Most message templates are text with `{{ name }}`, `{{ contact.email }}` or
# `{{ attributes["plan"] }}` in it. Such a template is joined straight from its pieces, which is
# what Jinja would output; anything else about it or its data (a missing name, a value that is not
# text or a number, a result over the size limit) takes the sandbox's way, which gives the answer
# or the error exactly as before.

_plain = Environment(keep_trailing_newline=True)  # the sandbox's lexer settings; it only parses
Piece = str | tuple[str, ...]  # literal text, or a path of names into the context


class _NotPlain(Exception):
    pass


def _path(node: nodes.Node) -> tuple[str, ...]:
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        key: Any = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
    else:
        raise _NotPlain
    # A name a dict has as an attribute (`items`, `get`) means the method to Jinja: not plain.
    if not isinstance(key, str) or hasattr(dict, key):
        raise _NotPlain
    return (*_path(node.node), key)


def plain_pieces(source: str) -> tuple[Piece, ...] | None:
    """The template as literal text and variable paths, or None when it does anything else."""
    try:
        ast = _plain.parse(source)
        pieces: list[Piece] = []
        for out in ast.body:
            if not isinstance(out, nodes.Output):
                return None
            for n in out.nodes:
                pieces.append(n.data if isinstance(n, nodes.TemplateData) else _path(n))
    except (_NotPlain, TemplateError):
        return None
    return tuple(pieces)


def _join(pieces: tuple[Piece, ...], context: Mapping[str, Any]) -> str:
    """The text, or `_NotPlain` when the sandbox must decide (its result or its error)."""
    out: list[str] = []
    try:
        for piece in pieces:
            if isinstance(piece, str):
                text = piece
            else:
                value: Any = context[piece[0]]
                for key in piece[1:]:
                    if type(value) is not dict:
                        raise _NotPlain
                    value = value[key]
                if type(value) is str:
                    text = value
                elif value is None or type(value) in (int, float, bool):
                    text = str(value)
                else:
                    raise _NotPlain
            out.append(text)
    except (KeyError, ValueError):  # a missing name; an int too long for str()
        raise _NotPlain from None
    text = "".join(out)
    if len(text) > MAX_OUTPUT:
        raise _NotPlain
    return text.replace("\x00", "")


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """A subject and body compiled once, rendered for many contacts (campaigns)."""

    subject: Template
    body: Template
    plain_subject: tuple[Piece, ...] | None = None
    plain_body: tuple[Piece, ...] | None = None

    def render(self, context: Mapping[str, Any]) -> tuple[str, str]:
        """(subject, body) under the work budget, in this process; `RenderError` with the reason
        if the data does not fit the template or the budget."""
        subject = self._part("subject", self.subject, self.plain_subject, context)
        return one_line(subject), self._part("body", self.body, self.plain_body, context)

    @staticmethod
    def _part(field: str, tpl: Template, pieces: tuple[Piece, ...] | None, context: Mapping[str, Any]) -> str:
        if pieces is not None:
            try:
                return _join(pieces, context)
            except _NotPlain:
                pass
        return _render_part(field, tpl, context)


@dataclass(frozen=True, slots=True)
class CompiledPart:
    """One more named part rendered like a body (a WhatsApp template's body parameters)."""

    field: str
    template: Template
    pieces: tuple[Piece, ...] | None = None

    def render(self, context: Mapping[str, Any]) -> str:
        """The text under the work budget; `RenderError` naming this part's field."""
        return CompiledMessage._part(self.field, self.template, self.pieces, context)


def compile_parts(parts: Sequence[tuple[str, str]]) -> list[CompiledPart]:
    """Compile named parts `(field, source)`; `TemplateInvalid` listing every part that fails."""
    errors: list[dict[str, str]] = []
    compiled: list[CompiledPart] = []
    for field, source in parts:
        try:
            compiled.append(CompiledPart(field, _compile(_strict, field, source), plain_pieces(source)))
        except TemplateInvalid as exc:
            errors.extend(exc.errors)
    if errors:
        raise TemplateInvalid(errors)
    return compiled


def compile_message(subject: str, body: str) -> CompiledMessage:
    """Compile both parts (`TemplateInvalid` on a syntax error or a dunder name)."""
    s, b = compile_parts((("subject", subject), ("body", body)))
    return CompiledMessage(s.template, b.template, s.pieces, b.pieces)


def context_for(contact: Any | None, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The names a template sees: the message's variables, then the contact's fields (which win,
    so `{{ email }}` is always the recipient's), and the fields again under `contact`."""
    fields: dict[str, Any] = {}
    if contact is not None:
        # One type check per contact, not per field: a campaign calls this once per recipient.
        values = (
            [contact.get(name) for name in CONTACT_FIELDS]
            if isinstance(contact, Mapping)
            else [getattr(contact, name) for name in CONTACT_FIELDS]
        )
        fields = {
            name: "" if value is None else value for name, value in zip(CONTACT_FIELDS, values, strict=True)
        }
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
    return one_line(out[0]), out[1]

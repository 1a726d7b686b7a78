"""The Jinja2 sandbox that user templates run in, with a work budget.

`ImmutableSandboxedEnvironment` stops escapes (dunders, internals, mutating builtins) but not
amplification: `10**1000**1000`, `'x'|center(10**9)`, `'%09999999d'|format(1)`, a string doubled
in a loop, nested loops over a long string. Here every render carries a `Budget` of work units:

- a loop item costs its share of the loop body's size in nodes, and every macro or `caller()` run
  its body's size (the parsed template is rewritten to call `__sb_iter__`/`__sb_spend__`);
- every call, filter, subscript and intercepted operator costs the size of what it reads and of
  what it makes, and is refused *before* it runs when its result would pass `MAX_VALUE` items or
  characters (padding widths, `%`/`format` widths, `replace`, `join`, `**`, `*`, `+`, `~`…);
- the output of each part is capped at `MAX_OUTPUT` characters.

So a render does at most about `WORK_BUDGET` small steps whatever the template and the data; the
process pool in `pool.py` adds a wall-clock deadline for what this accounting misses.

The parsed template is also checked for dunder names (`__globals__`, `x['__class__']`,
`attr('__mro__')`…) before it is compiled: a template that names one is hostile, not a typo."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter

# Units: a character or item read or made by a call; a template node run, a loop item or a call
# costs STEP (a step of the interpreter costs about as much as copying STEP characters). A full
# budget is well under a tenth of a second of CPU (measured: docs/decisions.md, template budget).
WORK_BUDGET = 200_000
STEP = 10
MAX_VALUE = 100_000  # characters (or items) of any one value a template makes
MAX_OUTPUT = 100_000  # characters of a rendered subject or body
MAX_INT_BITS = 4_000  # about 1,200 decimal digits

_DUNDER = re.compile(r"__\w+__")
_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_SPEC_NUMBERS = re.compile(r"\d+")


_BIG_NUMBER = f"the template does too much work (a number over {MAX_INT_BITS} bits)"


class BudgetExceeded(SecurityError):
    """The template does more work, or makes a bigger value, than a message may."""


class Budget:
    __slots__ = ("left",)

    def __init__(self, units: int = WORK_BUDGET) -> None:
        self.left = units


_budget: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def budgeted(units: int = WORK_BUDGET) -> Iterator[Budget]:
    """Run the renders inside with one fresh budget."""
    budget = Budget(units)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def spend(units: int) -> None:
    budget = _budget.get()
    if budget is None:  # compile-time constant folding: only the size checks apply
        return
    budget.left -= units
    if budget.left < 0:
        raise BudgetExceeded(f"the template does too much work (more than {WORK_BUDGET} steps)")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict | set | frozenset | range) else 1


def _allow(size: int, what: str = "value") -> None:
    if size > MAX_VALUE:
        raise BudgetExceeded(
            f"the template does too much work (a {what} longer than {MAX_VALUE} characters or items)"
        )


def _made(value: Any) -> Any:
    """Check and pay for a value the template made."""
    size = _size(value)
    _allow(size)
    spend(size)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise BudgetExceeded(_BIG_NUMBER)
    return value


def _int(value: Any) -> int:
    return abs(value) if isinstance(value, int) else 0


# --- Estimates of what an amplifying operation would make, checked before it runs --------------


def _printf_size(fmt: str, args: Any) -> int:
    """Widths and precisions in a %-format (`*` takes its width from the arguments)."""
    total = len(fmt)
    stars = False
    for width, precision in _PRINTF_WIDTHS.findall(fmt):
        for n in (width, precision):
            if n == "*":
                stars = True
            elif n:
                total += int(n)
    if stars:
        values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
        total += sum(_int(v) for v in values)
    return total + sum(_size(a) for a in (args if isinstance(args, tuple) else (args,)))


def _replace_size(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return _size(s)
    n = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(len(new) - len(old), 0)


def _join_size(sep: Any, items: Any) -> int:
    if not isinstance(items, list | tuple | set | frozenset | dict | range | str):
        return 0
    return sum(_size(x) for x in items) + max(len(items) - 1, 0) * _size(sep)


def _lines(s: Any) -> int:
    return s.count("\n") + 1 if isinstance(s, str) else 1


def _width_arg(position: int, name: str) -> Callable[..., int]:
    def estimate(value: Any, *args: Any, **kwargs: Any) -> int:
        width = args[position] if len(args) > position else kwargs.get(name, 0)
        return _size(value) + _int(width)

    return estimate


def _indent_size(s: Any, width: Any = 4, *args: Any, **kwargs: Any) -> int:
    width = kwargs.get("width", width)
    return _size(s) + _lines(s) * (_int(width) if isinstance(width, int) else _size(width))


def _wordwrap_size(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> int:
    wrapstring = args[1] if len(args) > 1 else kwargs.get("wrapstring")
    width = kwargs.get("width", width)
    lines = _size(s) // max(_int(width), 1) + _lines(s)
    return _size(s) + lines * (_size(wrapstring) if isinstance(wrapstring, str) else 1)


def _count_arg(position: int, name: str) -> Callable[..., int]:
    def estimate(value: Any, *args: Any, **kwargs: Any) -> int:
        n = args[position] if len(args) > position else kwargs.get(name, 0)
        return _size(value) + _int(n)

    return estimate


# Filters that can make much more than they read, by name: (value, *args, **kwargs) -> size.
_FILTER_ESTIMATES: dict[str, Callable[..., int]] = {
    "center": _width_arg(0, "width"),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "format": lambda value, *args, **kwargs: (
        _printf_size(value, kwargs or args) if isinstance(value, str) else 1
    ),
    "replace": lambda s, old="", new="", count=None: _replace_size(
        s, old, new, -1 if count is None else count
    ),
    "join": lambda value, d="", *args, **kwargs: _join_size(kwargs.get("d", d), value),
    "batch": _count_arg(0, "linecount"),
    "slice": _count_arg(0, "slices"),
    "truncate": lambda value, *args, **kwargs: _size(value),
}

# The same for methods of str a template may call.
_STR_ESTIMATES: dict[str, Callable[..., int]] = {
    "center": _width_arg(0, "width"),
    "ljust": _width_arg(0, "width"),
    "rjust": _width_arg(0, "width"),
    "zfill": _width_arg(0, "width"),
    "expandtabs": lambda s, tabsize=8, **kw: _size(s) + s.count("\t") * _int(kw.get("tabsize", tabsize)),
    "replace": _replace_size,
    "join": _join_size,
}


def _budget_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    estimate = _FILTER_ESTIMATES.get(name)
    passes_context = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        first = 1 if passes_context else 0
        value = args[first] if len(args) > first else None
        if name == "join" and value is not None and not isinstance(value, Sized):
            value = list(value)
            args = (*args[:first], value, *args[first + 1 :])
        if estimate is not None:
            _allow(estimate(value, *args[first + 1 :], **kwargs), f"{name} result")
        spend(STEP + _size(value))
        return _made(func(*args, **kwargs))

    return run


class _BudgetFormatter(SandboxedFormatter):
    """`str.format` in the sandbox, paying for each field's width and precision before padding."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _allow(sum(int(n) for n in _SPEC_NUMBERS.findall(format_spec)), "format width")
        return _made(super().format_field(value, format_spec))


class _BudgetTransform:
    """Rewrite a parsed template so loops and macro bodies pay as they run."""

    @staticmethod
    def _cost(body: Iterable[nodes.Node]) -> int:
        return STEP * sum(1 + sum(1 for _ in n.find_all(nodes.Node)) for n in body)

    @classmethod
    def _spend_first(cls, body: list[nodes.Node], lineno: int) -> None:
        call = nodes.Call(nodes.Name("__sb_spend__", "load"), [nodes.Const(cls._cost(body))], [], None, None)
        body.insert(0, nodes.ExprStmt(call, lineno=lineno))

    @classmethod
    def apply(cls, ast: nodes.Template) -> None:
        for loop in ast.find_all(nodes.For):
            per_item = STEP + (cls._cost([loop.test]) if loop.test is not None else 0)
            loop.iter = nodes.Call(
                nodes.Name("__sb_iter__", "load"), [loop.iter, nodes.Const(per_item)], [], None, None
            )
            cls._spend_first(loop.body, loop.lineno)
        for block in ast.find_all((nodes.Macro, nodes.CallBlock)):
            assert isinstance(block, nodes.Macro | nodes.CallBlock)
            cls._spend_first(block.body, block.lineno)
        for node in list(ast.find_all(nodes.Node)):
            for field in node.fields:
                value = getattr(node, field)
                if isinstance(value, nodes.Concat):
                    setattr(node, field, cls._concat(value))
                elif isinstance(value, list):
                    value[:] = [cls._concat(v) if isinstance(v, nodes.Concat) else v for v in value]
        for output in ast.find_all(nodes.Output):
            output.nodes = [
                n
                if isinstance(n, nodes.TemplateData)
                else nodes.Call(nodes.Name("__sb_out__", "load"), [n], [], None, None, lineno=n.lineno)
                for n in output.nodes
            ]

    @staticmethod
    def _concat(node: nodes.Concat) -> nodes.Call:
        return nodes.Call(nodes.Name("__sb_concat__", "load"), node.nodes, [], None, None, lineno=node.lineno)


def refuse_dunders(ast: nodes.Template) -> None:
    """`SecurityError` when a template names a dunder anywhere but in its plain text."""
    for node in ast.find_all(nodes.Node):
        if isinstance(node, nodes.TemplateData):
            continue
        for field in node.fields:
            value = getattr(node, field)
            if isinstance(value, str) and _DUNDER.search(value):
                raise SecurityError(f"the name {_DUNDER.search(value)[0]!r} is not allowed")  # type: ignore[index]


def _iter(iterable: Any, per_item: int) -> Iterator[Any]:
    spend(STEP)
    for item in iterable:
        spend(per_item)
        yield item


def _spend_body(units: int) -> None:
    spend(units)


# The injected calls below go through `BudgetedSandbox.call`, which pays for what they return.


def _concat(*parts: Any) -> str:
    strings = [str(p) for p in parts]
    _allow(sum(len(s) for s in strings), "joined text")
    return "".join(strings)


def _out(value: Any) -> Any:
    # Undefined stays as it is: str() of it raises (strict) or is empty (trial) in the output.
    return value if isinstance(value, str | Undefined) else str(value)


def _range(*args: int) -> range:
    rng = range(*args)
    spend(len(rng))
    return rng


_INJECTED = frozenset({_iter, _spend_body, _concat, _out})


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with the work budget and the dunder check; see the module docstring."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def __init__(self, undefined: type[Undefined]) -> None:
        super().__init__(undefined=undefined, autoescape=False, keep_trailing_newline=True)
        del self.globals["lipsum"]  # text of any length; templates have no use for it
        self.globals.update(
            range=_range, __sb_iter__=_iter, __sb_spend__=_spend_body, __sb_concat__=_concat, __sb_out__=_out
        )
        self.filters = {name: _budget_filter(name, f) for name, f in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        ast = super()._parse(source, name, filename)
        refuse_dunders(ast)
        _BudgetTransform.apply(ast)
        return ast

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Fail loudly instead of yielding an undefined value, so that the trial render (whose
        # undefined values are permissive) still sees the attempt.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is not allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _allow(len(seq) * max(n, 0), "repeated value")
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise BudgetExceeded(_BIG_NUMBER)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and (right > MAX_INT_BITS or right * left.bit_length() > MAX_INT_BITS):
                raise BudgetExceeded(_BIG_NUMBER)
        elif (
            operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
        ):
            _allow(len(left) + len(right), "joined value")
        elif operator == "%" and isinstance(left, str):
            _allow(_printf_size(left, right), "formatted text")
        spend(STEP)
        return _made(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if obj in _INJECTED:  # our own calls, on every output and loop: the short way
            spend(STEP)
            return _made(obj(*args))
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            estimate = _STR_ESTIMATES.get(getattr(obj, "__name__", ""))
            if estimate is not None:
                _allow(estimate(owner, *args, **kwargs), "text")
        spend(STEP + _size(owner))
        return _made(super().call(context, obj, *args, **kwargs))

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        return _made(value) if isinstance(argument, slice) else value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        f_self: str = value.__self__
        formatter = _BudgetFormatter(self)
        run: Callable[..., str]
        if value.__name__ == "format_map":

            def run(mapping: Any) -> str:
                return type(f_self)(formatter.vformat(f_self, (), mapping))
        else:

            def run(*args: Any, **kwargs: Any) -> str:
                return type(f_self)(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(run, value)

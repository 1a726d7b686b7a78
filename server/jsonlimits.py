"""Reading JSON from strangers with bounded nesting: a document nested thousands of levels deep
costs recursion in every parser and walker after it (RecursionError, a 500 with a traceback)."""

from __future__ import annotations

import json
from typing import Any

import orjson


class TooDeep(ValueError):
    """The document nests deeper than allowed."""


def depth_exceeds(doc: Any, max_depth: int) -> bool:
    """True when arrays and objects in `doc` nest deeper than `max_depth` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_bounded(raw: bytes | str, *, max_depth: int, lenient: bool = False) -> Any:
    """Parse JSON, refusing (`TooDeep`) documents nested deeper than `max_depth`.

    Strict by default (orjson, itself bounded at 1024 levels); `lenient` uses the standard library
    (lone surrogates, NaN: what providers may send), whose recursion is caught here. Other errors
    are the parser's own (`ValueError` subclasses)."""
    try:
        doc = json.loads(raw) if lenient else orjson.loads(raw)
    except RecursionError:
        raise TooDeep(f"nested deeper than {max_depth} levels") from None
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise TooDeep(f"nested deeper than {max_depth} levels") from None
        raise
    if depth_exceeds(doc, max_depth):
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return doc

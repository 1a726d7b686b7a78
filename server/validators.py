"""Field normalisers and the storable check that the request models' bases (`server.inputs`) apply."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# A plain ASCII dot-atom local part: email-validator keeps it as it is, so an address made of one
# and a domain it accepted before is normalised here without running it again (an import of a
# million rows spends most of its time in email-validator otherwise, mostly on the domain).
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_LOCAL, _MAX_ADDRESS = 64, 254


def _full(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return str(result.normalized)


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The normalised domain, or None when email-validator refuses it (then it says why)."""
    try:
        return _full("a@" + domain)[2:]
    except ValueError:
        return None


def normalize_email(value: str) -> str:
    """Syntax only (never deliverability); special-use domains such as .test are accepted."""
    value = value.strip()
    local, _at, domain = value.rpartition("@")
    if len(local) <= _MAX_LOCAL and _PLAIN_LOCAL.fullmatch(local):
        normal = _domain(domain)
        if normal is not None and len(local) + 1 + len(normal) <= _MAX_ADDRESS:
            return f"{local}@{normal}"
    return _full(value)


def normalize_phone(value: str) -> str:
    """E.164. A number must carry its country code (`+…`)."""
    raw = value.strip()
    if not raw.startswith("+") and not raw.startswith("00"):
        raise ValueError("phone must be in international form, starting with + and the country code")
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# What every database column and driver can hold: asyncpg refuses integers beyond int64 (answered
# as "dependency unavailable" before this check), PostgreSQL refuses NUL in text and in JSONB.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A key of a JSON object given by a client (attributes, variables, config): also a name in audit
# rows and logs, so it is bounded. `contacts.schemas` is stricter for attributes (audit column).
MAX_KEY_CHARS = 100


def contains_nul(*values: object) -> bool:
    """True when any of these strings holds a NUL character (form fields, query strings)."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


def _at(path: str) -> str:
    return f" (at `{path}`)" if path else ""


def refuse_unstorable(value: Any) -> Any:
    """`value` unchanged, or ValueError naming where it holds text with NUL, an integer beyond
    int64, or an object key that is empty or over MAX_KEY_CHARS. Walks lists and objects (the
    API bounds their nesting when it reads JSON); nested models check themselves."""
    kind = type(value)
    if kind is str:  # most fields: no walk
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value
    if value is None or kind is bool:
        return value
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("must not contain NUL characters" + _at(path))
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise ValueError("must be an integer between -2^63 and 2^63-1" + _at(path))
        elif isinstance(item, float):
            # JSON parsers read 2^70 as a float; PostgreSQL's JSONB gives it back as an integer
            # digit string that no int64 reader (asyncpg, orjson) accepts.
            if not -(2.0**63) < item < 2.0**63:
                raise ValueError("must be a number between -2^63 and 2^63" + _at(path))
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = str(key)
                if "\x00" in name:
                    raise ValueError(f"key {name!r} must not contain NUL characters" + _at(path))
                if not name or len(name) > MAX_KEY_CHARS:
                    shown = name if len(name) <= 40 else name[:40] + "…"
                    raise ValueError(f"key {shown!r} must be 1 to {MAX_KEY_CHARS} characters" + _at(path))
                stack.append((sub, f"{path}.{name}" if path else name))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((sub, f"{path}[{i}]") for i, sub in enumerate(item))
    return value

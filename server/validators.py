"""Field normalisers shared by request schemas."""

from __future__ import annotations

import re
from functools import lru_cache

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

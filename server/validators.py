"""Field normalisers shared by request schemas."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


def normalize_email(value: str) -> str:
    """Syntax only (never deliverability); special-use domains such as .test are accepted."""
    try:
        result = validate_email(value.strip(), check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized


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

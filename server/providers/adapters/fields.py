"""Reading a provider's config: typed fields, defaults, and every error at once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

SPECIAL_USE_TLDS = frozenset({"example", "localhost", "invalid"})


class ConfigError(ValueError):
    """Invalid provider config. `errors` is `[{"field": "config.<key>", "message": ...}]`."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def email_syntax(address: str) -> str:
    """The normalised address, checked for syntax only. Special-use domains (DESIGN §4: .test,
    .example, .localhost, .invalid) are accepted: local setups and tests use them."""
    local, at, domain = address.rpartition("@")
    stem, dot, tld = domain.rpartition(".")
    probe = address
    if at and tld.lower() in SPECIAL_USE_TLDS:
        # email-validator only lets `.test` through (test_environment): check the rest as if `.test`.
        probe = f"{local}@{stem}{dot}test"
    result = validate_email(probe, check_deliverability=False, test_environment=True)
    return (
        f"{result.local_part}@{result.domain[: -len('test')]}{tld.lower()}"
        if probe != address
        else result.normalized
    )


class Fields:
    """Validates one config mapping key by key; unknown keys are errors too (they are usually typos)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._raw = dict(config)
        self._out: dict[str, Any] = {}
        self._errors: list[dict[str, str]] = []

    def error(self, key: str, message: str) -> None:
        self._errors.append({"field": f"config.{key}", "message": message})

    def given(self, key: str) -> bool:
        """Whether the config sets `key` (optional groups of keys are validated only when set)."""
        return self._raw.get(key) not in (None, "")

    def _take(self, key: str) -> Any:
        value = self._raw.pop(key, None)
        return None if value == "" else value

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        default: str | None = None,
        pattern: str | None = None,
        hint: str = "has an invalid format",
    ) -> str | None:
        value = self._take(key)
        if value is None:
            if required:
                self.error(key, "is required")
            elif default is not None:
                self._out[key] = default
            return default
        if not isinstance(value, str):
            self.error(key, "must be a string")
            return None
        value = value.strip()
        if pattern is not None and not re.fullmatch(pattern, value):
            self.error(key, hint)
            return None
        self._out[key] = value
        return value

    def email(self, key: str, *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        try:
            normalised = email_syntax(value)
        except EmailNotValidError as exc:
            self._out.pop(key, None)
            self.error(key, f"is not a valid email address: {exc}")
            return None
        self._out[key] = normalised
        return normalised

    def integer(
        self, key: str, *, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._take(key)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, "must be an integer")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(key, f"must be between {minimum} and {maximum}")
            return default
        self._out[key] = value
        return value

    def number(self, key: str, *, default: float, minimum: float, maximum: float) -> float:
        value = self._take(key)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, "must be a number")
            return default
        if not minimum <= value <= maximum:
            self.error(key, f"must be between {minimum:g} and {maximum:g}")
            return default
        self._out[key] = float(value)
        return float(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._take(key)
        if value is None:
            value = default
        if not isinstance(value, bool):
            self.error(key, "must be true or false")
            return default
        self._out[key] = value
        return value

    def url(self, key: str, *, required: bool = False) -> str | None:
        """An absolute http(s) URL, path and query allowed."""
        value = self.string(key, required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._out.pop(key, None)
            self.error(key, "must be an absolute http:// or https:// URL")
            return None
        return value

    def origin(self, key: str = "base_url", *, default: str | None) -> str | None:
        """`scheme://host[:port]` only: the adapter appends the provider's documented path."""
        value = self.string(key)
        if value is None:
            if default is not None:
                self._out[key] = default
            return default
        message = "must be an origin only, scheme://host[:port], with no path, query or credentials"
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
            or parts.password is not None
            or value.endswith("?")
            or value.endswith("#")
        ):
            self.error(key, message)
            return default
        host = parts.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        normalised = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
        self._out[key] = normalised
        return normalised

    def result(self) -> dict[str, Any]:
        for key in sorted(self._raw):
            self.error(key, "is not a known setting for this provider kind")
        if self._errors:
            raise ConfigError(self._errors)
        return self._out

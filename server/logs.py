"""Logging: plain lines in development, one JSON object per line in production.

Every line carries the request id of the request (or message) it belongs to, when there is one."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from server.middleware import request_id_var
from server.settings import Settings


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return True


# Shapes of secrets that must never reach a log line, whatever put them in a message:
# bearer tokens and JWTs, password/secret/key fields, credentials in URLs, Slack webhook paths.
_KEYS = (
    r"password|passwd|secret|token|api[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token"
    r"|app[_-]?secret|signing[_-]?key|authorization"
)
_SECRETS = re.compile(
    # key=value / "key": "value" (a quoted value is masked to its closing quote)
    rf"(?i)((?:{_KEYS})[\"']?\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*'|(?:bearer\s+|basic\s+)?[^\s\"',&}}]+)"
    r"|(?i:(bearer\s+))[\w.~+/=-]+"
    r"|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]+"  # any JWT
    r"|(://[^/\s:@]+:)[^@\s/]+(@)"  # credentials in a URL
    r"|(hooks\.slack\.com/services/)\S+"
)


def redact(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1) + "[redacted]"
        if m.group(2):
            return m.group(2) + "[redacted]"
        if m.group(3):
            return m.group(3) + "[redacted]" + m.group(4)
        if m.group(5):
            return m.group(5) + "[redacted]"
        return "[redacted]"

    return _SECRETS.sub(sub, text)


class _RedactFilter(logging.Filter):
    """Masks secrets in the message, its arguments and any exception text (defence in depth:
    nothing should log them in the first place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key in ("message_id", "workspace_id", "provider"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out).decode()


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_RedactFilter())
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # These log every statement with its parameters (password hashes, token digests), or every
    # provider request URL (which may carry credentials), below WARNING.
    for name in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))


@contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Log lines inside carry this request id: the dispatcher wraps the work on one message in
    `with request_context(message.request_id):` so its lines join the request that created it."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)

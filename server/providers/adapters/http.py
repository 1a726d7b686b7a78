"""One POST to a provider's HTTP API, with its failures sorted into transient and permanent."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from server.endpoints.guard import refusal
from server.providers.adapters.base import PermanentError, SendError, TransientError

# Reads the provider's own error body (parsed JSON, or the text when it is not JSON): (reason,
# provider error code), or None when it is not theirs.
ErrorParser = Callable[[Any], tuple[str, str | None] | None]

log = logging.getLogger(__name__)

# Past this, an X-RateLimit-Reset value is a unix time rather than a number of seconds.
EPOCH_THRESHOLD_S = 1_000_000_000


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    parse_error: ErrorParser,
    reset_header: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST, returning a 2xx response; anything else raises a classified `SendError`.

    A timeout is transient even though the provider may have acted on the request: the caller
    decides, knowing whether the provider offers any way to deduplicate.
    """
    try:
        response = await http.post(url, **kwargs)
    except httpx.TransportError as exc:
        host = httpx.URL(url).host
        if (refused := refusal(exc)) is not None:  # the guard: retrying cannot help
            raise PermanentError(f"cannot connect to {host}: {refused}") from exc
        if isinstance(exc, httpx.TimeoutException):
            raise TransientError(f"timed out talking to {host} ({type(exc).__name__})") from exc
        raise TransientError(f"cannot reach {host}: {exc or type(exc).__name__}") from exc
    if response.is_success:
        return response
    raise error_from(response, parse_error, reset_header=reset_header)


def error_from(
    response: httpx.Response, parse_error: ErrorParser, *, reset_header: str | None = None
) -> SendError:
    reason, code = error_reason(response, parse_error)
    status = response.status_code
    if status in (408, 429) or status >= 500:
        return TransientError(
            reason, retry_after=retry_after(response, reset_header=reset_header), status=status, code=code
        )
    return PermanentError(reason, status=status, code=code)


def error_reason(response: httpx.Response, parse_error: ErrorParser) -> tuple[str, str | None]:
    """The provider's documented error message and code, cleaned and cut (`SendError` does that);
    any other body is never repeated (it may be an internal service's page): `HTTP <status>`."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text.strip()
    try:
        parsed = parse_error(body)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        parsed = None
    if parsed is not None and parsed[0]:
        return parsed[0], parsed[1]
    return f"HTTP {response.status_code} {response.reason_phrase}".strip(), None


def retry_after(response: httpx.Response, *, reset_header: str | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (delta-seconds or HTTP date), else from a reset header."""
    value = response.headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    if reset_header and (reset := response.headers.get(reset_header)):
        try:
            number = float(reset)
        except ValueError:
            return None
        return max(0.0, number - time.time()) if number > EPOCH_THRESHOLD_S else max(0.0, number)
    return None


def accepted_id(response: httpx.Response, extract: Callable[[Any], Any], *, fallback: str) -> str:
    """The provider's id for an accepted send. The send did happen, so an unreadable answer must
    not turn into an error (a retry would send twice): we log it and keep our own key instead."""
    try:
        value = extract(response.json())
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        value = None
    if not value:
        log.warning("accepted by %s but no message id in the answer", response.url.host)
        return fallback
    return str(value)

"""problem+json (RFC 9457) for every error the app answers, including 404, 405 and 500."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

log = logging.getLogger("switchboard.errors")

PROBLEM_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raise anywhere in a request to answer with problem+json."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


class NotFound(Exception):
    """No such thing in the caller's workspace: answered 404 "No such <what>." wherever it is
    raised during a request. Each domain's not-found error subclasses it and names its thing."""

    what = "thing"

    @property
    def detail(self) -> str:
        return f"No such {self.what}."


def problem_response(problem: Problem) -> Response:
    return Response(
        orjson.dumps(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_TYPE,
        headers=problem.headers,
    )


def validation_errors(exc: ValidationError, *, prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in (*prefix, *err["loc"])]
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "Unknown field"
        out.append({"field": ".".join(loc) or "body", "message": message})
    return out


async def _on_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _on_http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = (
        exc.detail if isinstance(exc.detail, str) and exc.detail != _TITLES.get(exc.status_code) else None
    )
    return problem_response(Problem(exc.status_code, detail, headers=dict(exc.headers or {})))


def is_unavailable(exc: BaseException) -> bool:
    """The database (or another dependency) cannot be reached right now: worth a 503, not a 500."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        # Walk to the driver's own error: SQLSTATE class 08 (connection exception), 53 (insufficient
        # resources) and 57 (operator intervention: shutting down, starting up) mean "not now".
        cause: BaseException | None = exc.orig
        while cause is not None:
            state = str(getattr(cause, "sqlstate", "") or "")
            if state[:2] in {"08", "53", "57"} or "ConnectionDoesNotExist" in type(cause).__name__:
                return True
            if isinstance(cause, (ConnectionError, TimeoutError)):
                return True
            cause = cause.__cause__
        return False
    return isinstance(exc, (sa_exc.TimeoutError, ConnectionError, TimeoutError, OSError))


async def _on_dependency_error(request: Request, exc: Exception) -> Response:
    # Registered per class (not on Exception) so Starlette answers here without re-raising.
    if is_unavailable(exc):
        log.warning(
            "dependency unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__
        )
        return problem_response(
            Problem(503, "A dependency is unavailable; try again shortly.", headers={"Retry-After": "1"})
        )
    return await _on_crash(request, exc)


async def _on_not_found(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFound)
    return problem_response(Problem(404, exc.detail))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(Problem(500, "Something went wrong on our side; it has been logged."))


def exception_handlers() -> dict[Any, ExceptionHandler]:
    from sqlalchemy import exc as sa_exc

    return {
        sa_exc.DBAPIError: _on_dependency_error,
        sa_exc.TimeoutError: _on_dependency_error,
        OSError: _on_dependency_error,
        Problem: _on_problem,
        NotFound: _on_not_found,
        HTTPException: _on_http,
        Exception: _on_crash,
    }

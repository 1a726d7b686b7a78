"""The `page` decorator of the dashboard's routes (they are collected in `ui.routes`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import Response

from server.errors import Problem
from server.validators import INT64_MAX, contains_nul
from ui.web import LoginRequired, Viewer, render, to_login, viewer

PageHandler = Callable[[Request, Viewer], Awaitable[Response]]


def page(role: str = "viewer") -> Callable[[PageHandler], Callable[[Request], Awaitable[Response]]]:
    """A page or fragment for a signed-in user: an expired session goes back to the login page
    (also for htmx requests, through `HX-Redirect`), a missing role gets a readable 403 page, and
    a query parameter or form field holding a NUL character (PostgreSQL cannot store one) a 422
    page naming it."""

    def wrap(fn: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(fn)
        async def endpoint(request: Request) -> Response:
            csrf_form: str | None = None
            # a query parameter or form field holding what the database cannot store
            unstorable = next((k for k, x in request.query_params.multi_items() if contains_nul(k, x)), None)
            if request.method not in ("GET", "HEAD"):
                form = await request.form()
                value = form.get("csrf_token")
                csrf_form = value if isinstance(value, str) else None
                if unstorable is None:  # (a parameter's name may be empty: compare with None)
                    unstorable = next((k for k, x in form.multi_items() if contains_nul(k, x)), None)
            try:
                v = await viewer(request, role=role, csrf_form=csrf_form)
            except LoginRequired as exc:
                return to_login(request, exc.next_url)
            except Problem as exc:
                return render(
                    request,
                    "error.html",
                    {"v": None, "status": exc.status, "detail": exc.detail},
                    status=exc.status,
                )
            try:
                if any(isinstance(x, int) and x > INT64_MAX for x in request.path_params.values()):
                    raise Problem(404, "No such page.")  # an id no database row can have
                if unstorable is not None:
                    shown = unstorable.replace("\x00", "\\0")
                    raise Problem(422, f"{shown}: must not contain NUL characters.")
                return await fn(request, v)
            except Problem as exc:
                return render(
                    request,
                    "error.html",
                    {"v": v, "status": exc.status, "detail": exc.detail},
                    status=exc.status,
                )

        return endpoint

    return wrap

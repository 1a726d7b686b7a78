"""`services_of(app)`: the one typed way from the app to its composition root.

Starlette's `app.state` is untyped, so a handler that reads `request.app.state.services` gets
`Any` and mypy checks nothing it does with it. Every request handler, middleware and page goes
through here instead (`request.app`, `websocket.app`, a middleware's `scope["app"]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.services import Services


def services_of(app: Any) -> Services:
    """The `Services` that `create_app` built for `app` (kept on `app.state.services`)."""
    services: Services = app.state.services
    return services

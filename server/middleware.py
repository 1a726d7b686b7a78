"""Pure ASGI middleware: body size limit and request ids."""

from __future__ import annotations

import contextvars
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import Problem, problem_response

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class BodyLimit:
    """Answer 413 when the body is larger than `max_bytes`, by Content-Length or as it streams.

    `routes` gives single routes, by exact (method, path), a limit of their own (the contact
    import takes uploads far over the JSON limit); every other request keeps `max_bytes`."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, routes: dict[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.routes.get((scope["method"], scope["path"]), self.max_bytes)
        too_large = Problem(413, f"The body is larger than {max_bytes} bytes.")
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > max_bytes:
                        await problem_response(too_large)(scope, receive, send)
                        return
                except ValueError:
                    pass
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited, send)


class RequestId:
    """Take `X-Request-ID` from the client (if sane) or make one; echo it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if 0 < len(candidate) <= 64 and candidate.replace("-", "").isalnum():
                    rid = candidate
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
        # Reset only on success: on an unhandled error the outer ServerErrorMiddleware logs it
        # next, and its line must carry this id (each request runs in its own task context).
        request_id_var.reset(token)

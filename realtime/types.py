"""Shared types of the real-time layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from realtime.topics import topics_of
from realtime.wire import ws_text_frame

# `board`, `contacts` or `contact:{id}` (see realtime.topics).
Topic = str


class Caller(Protocol):
    """Who is connected: what `server.auth.principal.authenticate` returns."""

    @property
    def user_id(self) -> int: ...
    @property
    def workspace_id(self) -> int: ...


Authenticator = Callable[[HTTPConnection], Awaitable[Caller]]
# Does the caller's access still stand (user active, sign-in not revoked, token not expired)?
# Asked again by open sockets and streams; a caller may carry `expires_at` (Unix time) to be
# asked no later than that.
AccessCheck = Callable[[Caller], Awaitable[bool]]
# The caller's budget across sockets (and instances) for an op that writes or reads the
# database (`presence`, `subscribe`): False when spent.
OpBudget = Callable[[Caller], Awaitable[bool]]


class Event:
    """One committed event-log row as it travels: the envelope is encoded once, on the relay,
    and the WebSocket frame and SSE record are built from it at most once per process."""

    __slots__ = ("_frame", "_sse", "contact_id", "id", "payload", "topics", "type", "workspace_id")

    def __init__(self, workspace_id: int, id: int, type: str, contact_id: int | None, payload: bytes) -> None:
        self.workspace_id = workspace_id
        self.id = id
        self.type = type
        self.contact_id = contact_id
        self.payload = payload
        self.topics: tuple[Topic, ...] = topics_of(type, contact_id)
        self._frame: bytes | None = None
        self._sse: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The server-to-client WebSocket text frame carrying the envelope."""
        if self._frame is None:
            self._frame = ws_text_frame(self.payload)
        return self._frame

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"id: %d\ndata: %s\n\n" % (self.id, self.payload)
        return self._sse

    def envelope(self) -> dict[str, Any]:
        import orjson

        return orjson.loads(self.payload)

    def __repr__(self) -> str:
        return f"Event(ws={self.workspace_id}, id={self.id}, type={self.type!r})"

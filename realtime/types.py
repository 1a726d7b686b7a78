"""Shared types of the real-time layer, and the small interfaces it needs from the application.

The realtime package imports nothing from `server`: the server hands it a database handle
(`Database`), its event log (`EventLog`, implemented by `server.events.log.SqlEventLog`) and a
way to authenticate a connection (`Authenticator`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from realtime.topics import Topic, topics_of
from realtime.wire import ws_text_frame

__all__ = ["Authenticator", "Caller", "Database", "Event", "EventLog", "Reader", "Topic"]

# What the log is read through: a session, or (the relay on PostgreSQL) a held connection.
Reader = AsyncSession | AsyncConnection


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


class Readable(Protocol):
    """Something the log can be read from: the app's database, or the layer's own `LogReader`."""

    @property
    def engine(self) -> AsyncEngine: ...
    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...
    @property
    def dialect(self) -> str: ...


class Database(Readable, Protocol):
    """The app's database handle (`server.db.Database`)."""

    @property
    def url(self) -> str: ...
    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]: ...


class EventLog(Protocol):
    """The application's event log (outbox), as the realtime layer reads and writes it."""

    @property
    def notify_channel(self) -> str:
        """The PostgreSQL channel NOTIFYed (payload: the workspace id) when events commit."""

    async def read_events(
        self,
        session: Reader,
        workspace_id: int,
        after: int,
        *,
        upto: int | None = None,
        topics: frozenset[Topic] | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Committed events after `after` (and up to `upto`), oldest first, optionally by topic."""

    async def heads(self, session: Reader, workspace_ids: Iterable[int] | None = None) -> dict[int, int]:
        """The last committed event id of each workspace (all, or those given)."""

    async def first_since(self, session: Reader, since: dt.datetime) -> dict[int, int]:
        """Per workspace, the first id written at or after `since`."""

    async def oldest_retained(self, session: Reader, workspace_id: int) -> int | None: ...
    async def contacts_exist(self, session: Reader, workspace_id: int, ids: list[int]) -> set[int]: ...
    async def conversation_exists(self, session: Reader, workspace_id: int, conversation_id: int) -> bool:
        """Whether a conversation is the workspace's (presence in a conversation, DESIGN §8)."""

    async def prune(self, session: AsyncSession, older_than: dt.datetime) -> int:
        """Delete events older than the retention; returns how many."""

    async def user_name(self, session: AsyncSession, workspace_id: int, user_id: int) -> str:
        """How a user is shown to others (presence)."""

    async def emit(
        self,
        session: AsyncSession,
        workspace_id: int,
        type: str,
        data: dict[str, Any],
        *,
        contact_id: int | None,
    ) -> None:
        """Append an event in this transaction."""


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

        value: dict[str, Any] = orjson.loads(self.payload)
        return value

    def __repr__(self) -> str:
        return f"Event(ws={self.workspace_id}, id={self.id}, type={self.type!r})"


# A batch on the backend: one line per event, `id \t type \t contact_id \t envelope-json`.
# orjson escapes tab and newline inside strings, so neither occurs raw in the envelope.
def encode_batch(events: list[Event]) -> bytes:
    return b"\n".join(
        b"%d\t%s\t%s\t%s"
        % (e.id, e.type.encode(), b"" if e.contact_id is None else b"%d" % e.contact_id, e.payload)
        for e in events
    )


def decode_batch(workspace_id: int, data: bytes) -> Iterator[Event]:
    for line in data.split(b"\n"):
        if not line:
            continue
        id_, type_, contact, payload = line.split(b"\t", 3)
        yield Event(workspace_id, int(id_), type_.decode(), int(contact) if contact else None, payload)

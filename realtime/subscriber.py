"""Local consumers of a workspace's events: a WebSocket, an SSE stream, a waiting long-poll.

The hub calls `push()` with events in id order. Until `go_live()` (while the replay from the
log runs) they are held in `pending`; `floor` drops ids the consumer already has, which is what
makes the seam between replay and live free of duplicates. Every consumer is bounded: past its
limit it is cut off with a reason, and resumes with `after`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque

from realtime.types import Event, Topic
from realtime.wire import ws_close_frame

SLOW = "too slow: reconnect and resume with after"
ABORT_AFTER_S = 5.0
GRACE_S = 1.0
HARD_FACTOR = 8
KERNEL_SNDBUF = 64 * 1024  # a cut-off client that does not read its close frame is dropped after this


class Subscriber:
    __slots__ = ("closed", "code", "floor", "limit", "live", "pending", "topics", "workspace_id")

    def __init__(self, workspace_id: int, topics: frozenset[Topic], *, limit: int) -> None:
        self.workspace_id = workspace_id
        self.topics = topics
        self.limit = limit
        self.floor = 0
        self.live = False
        self.pending: list[Event] = []
        self.closed: str | None = None  # why it was cut off
        self.code = 1008  # and the WebSocket close code that says so

    def push(self, events: list[Event]) -> None:
        if events[-1].id <= self.floor or self.closed:
            return
        if events[0].id <= self.floor:
            events = [e for e in events if e.id > self.floor]
        if self.live:
            self.send(events)
        else:
            self.pending.extend(events)
            if len(self.pending) > self.limit:
                self.cut(SLOW)

    def go_live(self) -> None:
        self.live = True
        pending, self.pending = self.pending, []
        if pending:
            self.push(pending)

    @property
    def wants_more(self) -> bool:
        return not self.closed

    async def replay(self, events: list[Event]) -> None:
        """Deliver events read from the log (below the floor), waiting for room if need be."""
        if events and not self.closed:
            self.send(events)

    def send(self, events: list[Event]) -> None:
        raise NotImplementedError

    def cut(self, reason: str, code: int = 1008) -> None:
        self.closed = reason
        self.code = code


class TransportSink(Subscriber):
    """A WebSocket written straight to its transport: frames built once per event are shared by
    every socket, and the transport's write buffer is the bounded per-connection buffer."""

    __slots__ = ("limit_bytes", "over_since", "transport")

    def __init__(
        self,
        workspace_id: int,
        topics: frozenset[Topic],
        transport: asyncio.WriteTransport,
        *,
        limit_bytes: int,
    ) -> None:
        super().__init__(workspace_id, topics, limit=limit_bytes // 64)
        self.transport = transport
        self.limit_bytes = limit_bytes
        self.over_since: float | None = None
        # Keep the kernel's share of the backlog small too (loopback autotunes it to megabytes),
        # so "cut off past the buffer" bounds a client's lag in time, not just in our memory.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SNDBUF)

    def send(self, events: list[Event]) -> None:
        if self.closed:
            return
        t = self.transport
        if t.is_closing():
            self.closed = "closed"
            return
        # A client is cut off when its backlog stays past the limit for GRACE_S (it does not
        # drain), or passes HARD_FACTOR times the limit: bursts pass, slow readers do not.
        size = t.get_write_buffer_size()
        if size > self.limit_bytes:
            now = asyncio.get_running_loop().time()
            if self.over_since is None:
                self.over_since = now
            elif now - self.over_since > GRACE_S or size > self.limit_bytes * HARD_FACTOR:
                self.cut(SLOW)
                return
        else:
            self.over_since = None
        t.write(events[0].frame if len(events) == 1 else b"".join([e.frame for e in events]))

    def send_frame(self, frame: bytes) -> None:
        if not self.closed and not self.transport.is_closing():
            self.transport.write(frame)

    async def replay(self, events: list[Event]) -> None:
        await super().replay(events)
        while not self.closed and self.transport.get_write_buffer_size() > self.limit_bytes // 2:
            if self.transport.is_closing():
                self.closed = "closed"
                return
            await asyncio.sleep(0.01)

    def cut(self, reason: str, code: int = 1008) -> None:
        if self.closed:
            return
        super().cut(reason, code)
        t = self.transport
        if not t.is_closing():
            t.write(ws_close_frame(code, reason))
            t.close()
            asyncio.get_running_loop().call_later(ABORT_AFTER_S, t.abort)


class QueueSink(Subscriber):
    """A bounded queue drained by the connection's own task (SSE, or a WebSocket whose transport
    we cannot reach). Control frames (bytes) share the queue so order is kept."""

    __slots__ = ("_drained", "_ready", "queue")

    def __init__(self, workspace_id: int, topics: frozenset[Topic], *, limit: int) -> None:
        super().__init__(workspace_id, topics, limit=limit)
        self.queue: deque[Event | bytes] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()

    def send(self, events: list[Event]) -> None:
        if self.closed:
            return
        self.queue.extend(events)
        self._ready.set()
        if len(self.queue) > self.limit:
            self.cut(SLOW)

    def send_frame(self, payload: bytes) -> None:
        if not self.closed:
            self.queue.append(payload)
            self._ready.set()

    def cut(self, reason: str, code: int = 1008) -> None:
        super().cut(reason, code)
        self._ready.set()
        self._drained.set()

    async def replay(self, events: list[Event]) -> None:
        await super().replay(events)
        if len(self.queue) > self.limit // 2:
            self._drained.clear()
            await self._drained.wait()

    async def get(self, wait_s: float | None = None) -> list[Event | bytes]:
        """What is queued, waiting up to `wait_s` for something; [] on timeout or when cut."""
        if not self.queue and not self.closed:
            try:
                async with asyncio.timeout(wait_s):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        if self.closed:
            return []
        items = list(self.queue)
        self.queue.clear()
        self._drained.set()
        return items


class LongPollSink(Subscriber):
    """Collects up to `max_events` and then stops: a long-poll answer."""

    __slots__ = ("events", "max_events", "ready")

    def __init__(self, workspace_id: int, topics: frozenset[Topic], *, max_events: int) -> None:
        super().__init__(workspace_id, topics, limit=max_events * 4)
        self.max_events = max_events
        self.events: list[Event] = []
        self.ready = asyncio.Event()

    @property
    def wants_more(self) -> bool:
        return len(self.events) < self.max_events

    def push(self, events: list[Event]) -> None:
        if self.wants_more:
            super().push(events)

    def send(self, events: list[Event]) -> None:
        room = self.max_events - len(self.events)
        if room > 0:
            self.events.extend(events[:room])
            self.ready.set()

    def cut(self, reason: str, code: int = 1008) -> None:
        # A long-poll holds at most one answer: anything past it is fetched by the next poll.
        self.live = True
        self.pending, pending = [], self.pending
        self.send(pending)

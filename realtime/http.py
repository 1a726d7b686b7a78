"""`GET /api/v1/events` (long-poll) and `GET /api/v1/events/stream` (server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from realtime import access, guard
from realtime.subscriber import LongPollSink, QueueSink
from realtime.types import Caller, Event

if TYPE_CHECKING:
    from realtime.service import Realtime

MAX_EVENTS = 500
DEFAULT_TIMEOUT_S = 25.0
SSE_RETRY_MS = 2000


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/problem+json")


def signed_out() -> Response:
    return problem(
        401,
        "Signed out",
        "This sign-in has ended (signed out, revoked or the user deactivated): sign in again.",
        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class Stream:
    """An SSE stream or a waiting long-poll, as the access sweep sees it (`guard.Live`)."""

    __slots__ = ("caller", "due", "ended", "marks", "sink")

    def __init__(self, rt: Realtime, caller: Caller, sink: QueueSink | LongPollSink) -> None:
        self.caller = caller
        self.marks = guard.marks_of(caller)
        self.due = asyncio.get_running_loop().time() + guard.next_check_in(
            caller, rt.settings.ws_access_recheck_s
        )
        self.sink = sink
        self.ended = False  # access is gone: the stream ends with an error, the long-poll with 401

    @property
    def over(self) -> bool:
        return self.ended or bool(self.sink.closed)

    def end(self, code: int, reason: str) -> None:
        self.ended = True
        self.sink.cut(reason, code)
        if isinstance(self.sink, LongPollSink):
            self.sink.ready.set()


@contextlib.contextmanager
def watched(
    rt: Realtime, caller: Caller, sink: QueueSink | LongPollSink, generation: int
) -> Iterator[Stream]:
    """`sink` in the access sweep (and reachable by revocation notes) while the block runs;
    `generation`: the admissions' generation before the caller was admitted (`guard.joined`)."""
    stream = Stream(rt, caller, sink)
    rt.streams.add(stream)
    guard.joined(rt, stream, generation)
    try:
        yield stream
    finally:
        rt.streams.discard(stream)


def _topics(request: Request) -> list[str]:
    return [p for p in request.query_params.get("topics", "").split(",") if p.strip()]


async def longpoll(rt: Realtime, request: Request) -> Response:
    generation = rt.admissions.generation
    caller = await rt.authenticate(request)
    if not await guard.admitted(rt, caller):
        return signed_out()
    try:
        after = access.parse_after(request.query_params.get("after"))
        raw_timeout = request.query_params.get("timeout")
        try:
            timeout = DEFAULT_TIMEOUT_S if raw_timeout in (None, "") else float(raw_timeout)
        except ValueError:
            raise access.Refused("timeout must be a number of seconds.") from None
        if not 0 <= timeout <= rt.settings.longpoll_max_timeout_s:
            raise access.Refused(
                f"timeout must be between 0 and {rt.settings.longpoll_max_timeout_s:g} seconds."
            )
        topics = await access.check(rt.db, rt.log, caller.workspace_id, _topics(request), after)
    except access.Refused as exc:
        return problem(422, "Invalid subscription", str(exc))
    except access.Resync:
        head = await rt.hub.head(caller.workspace_id)
        return Response(
            orjson.dumps({"resync": True, "events": [], "last_id": head}), media_type="application/json"
        )
    sink = LongPollSink(caller.workspace_id, topics, max_events=MAX_EVENTS)
    with watched(rt, caller, sink, generation) as watch:
        try:
            await rt.hub.subscribe(sink, after)
            if not sink.events and timeout > 0 and not watch.ended:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await sink.ready.wait()
        finally:
            rt.hub.unsubscribe(sink)
    if watch.ended:
        return signed_out()
    events = sink.events
    last_id = events[-1].id if events else sink.floor
    body = b'{"events":[%s],"last_id":%d}' % (b",".join(e.payload for e in events), last_id)
    return Response(body, media_type="application/json")


async def stream(rt: Realtime, request: Request) -> Response:
    generation = rt.admissions.generation
    caller = await rt.authenticate(request)
    if not await guard.admitted(rt, caller):
        return signed_out()
    try:
        raw_after = request.headers.get("last-event-id") or request.query_params.get("after")
        after = access.parse_after(raw_after)
        topics = await access.check(rt.db, rt.log, caller.workspace_id, _topics(request), after)
    except access.Refused as exc:
        return problem(422, "Invalid subscription", str(exc))
    except access.Resync:
        topics, after = None, None
    sink = QueueSink(caller.workspace_id, topics or frozenset(), limit=rt.settings.ws_send_buffer)
    ping_s = rt.settings.ws_ping_interval_s

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: %d\n\n" % SSE_RETRY_MS
        if topics is None:
            yield b'event: resync\ndata: {"type":"resync"}\n\n'
            return
        # Replays wait for room in the queue, which this generator drains: run them beside it.
        attach = asyncio.create_task(rt.hub.subscribe(sink, after))
        try:
            with watched(rt, caller, sink, generation):  # the access sweep cuts the sink when access is gone
                while True:
                    items = await sink.get(ping_s)
                    if attach.done() and attach.exception() is not None:
                        return
                    if sink.closed:
                        yield b'event: error\ndata: {"type":"error","detail":"%s"}\n\n' % sink.closed.encode()
                        return
                    if not items:
                        yield b": ping\n\n"
                        continue
                    yield b"".join(i.sse if isinstance(i, Event) else i for i in items)
        finally:
            attach.cancel()
            rt.hub.unsubscribe(sink)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

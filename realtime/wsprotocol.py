"""uvicorn's WebSocket protocol for Switchboard: what an idle socket costs, cut to what it needs.

uvicorn's own implementations keep, for every connection, an `asyncio.Queue` (five deques),
two `asyncio.Event`s, the handshake request and response with their headers, and a `__dict__`
of some forty attributes: 18-19 KiB of a process's memory before the app has done anything
(`python -m bench.fanout`, idle WebSockets). This protocol keeps a slotted object, the frame
parser, one future while the app waits for a message and one while a full transport drains.

The opening handshake is websockets' `ServerProtocol` (request checks, Sec-WebSocket-Accept),
as in uvicorn's `websockets-sansio`; once the 101 is out, frames go on through a frames-only
`websockets.protocol.Protocol` and the handshake objects are dropped. ASGI behaviour follows
uvicorn's: reads pause while a message waits for the app, keep-alive pings with a timeout, a
closing handshake with a timer, 1012 on shutdown, 403 for a refusal and 500 for a crash before
the accept. Per-message compression is never negotiated: the realtime layer writes frames it
built once straight to many transports.

    uvicorn.run(app, ws=WebSocketProtocol)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, SERVER, Protocol
from websockets.server import ServerProtocol

log = logging.getLogger("uvicorn.error")

CLOSE_TIMEOUT_S = 10.0  # after our close frame, how long the peer has to answer it


def _close_ends_any_message(conn: Protocol, frame: Frame) -> None:
    """RFC 6455 §5.4: control frames may come between the fragments of a message, a Close too.
    websockets refuses a Close there ("incomplete fragmented message", 1002); the connection
    ends either way, so the unfinished message is dropped and the Close answered like any
    other (uvicorn's `websockets` implementation answers it the same way)."""
    if frame.opcode is Opcode.CLOSE:
        conn.current_size = None


class HandshakeProtocol(ServerProtocol):
    """The opening handshake (and frames that arrive before the accept)."""

    def recv_frame(self, frame: Frame) -> None:
        _close_ends_any_message(self, frame)
        super().recv_frame(frame)


class FrameProtocol(Protocol):
    """Frames only, once the 101 is out."""

    def recv_frame(self, frame: Frame) -> None:
        _close_ends_any_message(self, frame)
        super().recv_frame(frame)


class WebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "accepted",
        "app",
        "app_state",
        "close_sent",
        "close_timer",
        "config",
        "conn",
        "disconnected",
        "drain",
        "early",
        "frames",
        "inbox",
        "loop",
        "ping_payload",
        "ping_timer",
        "pong_timer",
        "read_paused",
        "response",
        "server_state",
        "text",
        "transport",
        "waiter",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Protocol = HandshakeProtocol(max_size=config.ws_max_size, logger=log)
        self.response: Response | None = None  # the 101, between handshake and accept
        self.accepted = False  # the app has answered the handshake (accepted or refused)
        self.early = False  # bytes came after the request, before the accept
        self.close_sent = False
        self.disconnected = False
        self.read_paused = False
        self.inbox: list[dict[str, Any]] = []
        self.waiter: asyncio.Future[None] | None = None  # the app, waiting for a message
        self.drain: asyncio.Future[None] | None = None  # the app, waiting for the transport
        self.frames: list[bytes] = []  # a fragmented message so far
        self.text = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.ping_payload: bytes | None = None

    # -- transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn's HTTP protocol hands the upgraded connection over from inside a callback of
        # its httptools parser; the two refer to each other, so the HTTP side (~3 KiB) would
        # wait for a full cyclic collection. Unlinked, it goes as soon as the hand-over returns.
        handed_over = transport.get_protocol()
        if handed_over is not self and getattr(handed_over, "parser", None) is not None:
            handed_over.parser = None  # type: ignore[attr-defined]
        self.transport = cast(asyncio.Transport, transport)
        self.server_state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_keepalive()
        self.deliver({"type": "websocket.disconnect", "code": 1005 if self.accepted else 1006})
        self.server_state.connections.discard(self)
        self.accepted = self.disconnected = True
        self.resume_writing()  # a transport lost while paused never resumes
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if exc is None:
            self.transport.close()
        retire(self.conn)

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.response is not None:
            self.early = True
        self.conn.receive_data(data)
        if self.conn.parser_exc is not None:
            self.fail()
            return
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self.handshake(event)
            elif isinstance(event, Frame):
                self.frame(event)

    def shutdown(self) -> None:
        """The server is stopping: close with 1012 (or refuse a handshake still pending)."""
        self.stop_keepalive()
        if self.close_sent:
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
        elif self.accepted:
            self.deliver({"type": "websocket.disconnect", "code": 1012})
            with contextlib.suppress(InvalidState):  # the peer's close frame came first
                self.conn.send_close(1012)
            self.flush()
        else:
            self.send_500()
        self.transport.close()

    # -- the peer ----------------------------------------------------------------------------

    def handshake(self, request: Request) -> None:
        conn = cast(ServerProtocol, self.conn)
        response = conn.accept(request)
        if response.status_code != 101:
            self.accepted = self.close_sent = True
            conn.send_response(response)
            self.flush()
            self.transport.close()
            return
        self.response = response
        raw_path, _, query = request.path.partition("?")
        root = self.config.root_path
        subprotocols = [
            token.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for token in header.split(",")
        ]
        scope = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": root.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": [
                (k.lower().encode("ascii"), v.encode("latin-1")) for k, v in request.headers.raw_items()
            ],
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {},
        }
        self.deliver({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi(scope))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            self.text = op is Opcode.TEXT
            self.frames = [frame.data]  # type: ignore[list-item]
        elif op is Opcode.CONT:
            self.frames.append(frame.data)  # type: ignore[arg-type]
        elif op is Opcode.PING:
            self.flush()  # the parser queued the pong
            return
        elif op is Opcode.PONG:
            self.pong(frame)
            return
        else:
            self.frames = []  # a message cut short by the Close is never delivered
            self.closing()
            return
        if not frame.fin:
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # the app is past its close: keep reading until the peer answers it
        if self.text:
            try:
                message: dict[str, Any] = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.conn.send_close(1007, "invalid UTF-8")
                self.fail()
                return
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        self.deliver(message)
        if not self.read_paused:  # one message at a time: the app sets the pace
            self.read_paused = True
            self.transport.pause_reading()

    def closing(self) -> None:
        if self.close_sent:
            # The peer answered our close frame: the closing handshake is complete.
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
                self.transport.close()
            return
        if not self.transport.is_closing():
            rcvd = self.conn.close_rcvd
            code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1005, "")
            self.deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.flush()  # our answering close frame
            self.transport.close()

    def fail(self) -> None:
        """A protocol error: the parser has queued its close frame."""
        sent = self.conn.close_sent
        code, reason = (sent.code, sent.reason) if sent is not None else (1002, "")
        self.deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.flush()
        self.close_sent = True
        self.transport.close()

    # -- keep-alive --------------------------------------------------------------------------

    def start_keepalive(self) -> None:
        interval = self.config.ws_ping_interval
        if interval is not None and interval > 0:
            self.ping_timer = self.loop.call_later(interval, self.ping)

    def stop_keepalive(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = self.ping_payload = None

    def ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing():
            return
        # A random payload tells this ping's pong from a stale or unsolicited one.
        self.ping_payload = struct.pack("!I", random.getrandbits(32))
        self.conn.send_ping(self.ping_payload)
        self.flush()
        timeout = self.config.ws_ping_timeout
        if timeout is not None:
            self.pong_timer = self.loop.call_later(timeout, self.keepalive_timeout)
        else:
            self.start_keepalive()

    def pong(self, frame: Frame) -> None:
        if self.ping_payload is None or bytes(frame.data) != self.ping_payload:
            return
        self.ping_payload = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
            self.start_keepalive()

    def keepalive_timeout(self) -> None:
        self.pong_timer = self.ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(1011, "keepalive ping timeout")
        self.flush()
        self.close_sent = True
        self.transport.close()

    # -- the app -----------------------------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> None:
        self.inbox.append(message)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while not self.inbox:
            self.waiter = self.loop.create_future()
            await self.waiter
        message = self.inbox.pop(0)
        if self.read_paused and not self.inbox:
            self.read_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self.drain is not None:
            await asyncio.shield(self.drain)
        if self.disconnected:
            raise ClientDisconnected()
        kind = message["type"]
        if not self.accepted:
            if kind == "websocket.accept":
                self.accept(message)
            elif kind == "websocket.close":
                self.refuse()
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.accept' or 'websocket.close', got {kind!r}."
                )
        else:
            try:
                self.send_open(kind, message)
            except InvalidState:  # the peer's close frame came first
                raise ClientDisconnected() from None

    def send_open(self, kind: str, message: dict[str, Any]) -> None:
        if self.close_sent:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} after sending 'websocket.close'.")
        if kind == "websocket.send":
            data = message.get("bytes")
            text = message.get("text")
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                self.conn.send_text(text.encode())
            self.flush()
        elif kind == "websocket.close":
            if not self.transport.is_closing():
                code = message.get("code", 1000)
                reason = message.get("reason") or ""
                self.deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
                self.conn.send_close(code, reason)
                self.flush()
                self.close_sent = True
                if self.read_paused:
                    self.read_paused = False
                    self.transport.resume_reading()
                self.close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.transport.close)
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', got {kind!r}.")

    def accept(self, message: dict[str, Any]) -> None:
        response = self.response
        assert response is not None
        del response.headers["Date"]
        for name, value in [*self.server_state.default_headers, *message.get("headers", [])]:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if message.get("subprotocol"):
            response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
        self.response = None
        if self.transport.is_closing():
            return
        self.accepted = True
        handshake = cast(ServerProtocol, self.conn)
        handshake.send_response(response)
        self.flush()
        if not self.early:
            # Nothing came after the request: the frames start afresh, and the handshake's
            # parser (which holds the request and its headers) goes.
            retire(handshake)
            self.conn = FrameProtocol(SERVER, state=OPEN, max_size=self.config.ws_max_size, logger=log)
        self.start_keepalive()

    def refuse(self) -> None:
        """`websocket.close` before the accept: HTTP 403."""
        self.deliver({"type": "websocket.disconnect", "code": 1006})
        handshake = cast(ServerProtocol, self.conn)
        handshake.send_response(handshake.reject(403, ""))
        self.response = None
        self.accepted = self.close_sent = True
        self.flush()
        self.transport.close()

    def send_500(self) -> None:
        if self.accepted or self.response is None:
            return
        handshake = cast(ServerProtocol, self.conn)
        handshake.send_response(handshake.reject(500, "Internal Server Error"))
        self.response = None
        self.accepted = True
        self.flush()

    async def run_asgi(self, scope: dict[str, Any]) -> None:
        try:
            result = await self.app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            log.exception("Exception in ASGI application\n")
            self.send_500()
        else:
            if not self.accepted:
                log.error("ASGI callable returned without completing handshake.")
                self.send_500()
            elif result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            self.transport.close()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.transport.write(b"".join(out))


def retire(conn: Protocol) -> None:
    """Free a websockets protocol object now. Its parser is a generator whose frame refers back
    to it: left alone, the pair (with the request's headers) waits for a full cyclic collection."""
    conn.parser.close()

"""`GET /ws`: one connection. Ops: `subscribe` (topics, after), `presence`, `ping`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from realtime import access, guard
from realtime.presence import CONVERSATION_STATES, STATES, Key, conversation_key
from realtime.subscriber import QueueSink, TransportSink
from realtime.types import Caller, Event
from realtime.wire import ws_text_frame

if TYPE_CHECKING:
    from realtime.service import Realtime

log = logging.getLogger("switchboard.realtime")

PING = b'{"type":"ping"}'
# `ws_send_buffer` counts frames; the transport's buffer counts bytes. A typical event frame.
FRAME_BYTES = 256
RESYNC = b'{"type":"resync"}'
PROTOCOL_MODULES = ("realtime.wsprotocol", "uvicorn.protocols.websockets")


def find_transport(send: Any) -> Any:
    """The transport under our or uvicorn's WebSocket protocol, found through the ASGI `send`
    callable (middleware wraps it in closures). None under any other server: then frames go
    through ASGI."""
    stack, seen = [send], 0
    while stack and seen < 16:
        fn = stack.pop()
        seen += 1
        owner = getattr(fn, "__self__", None)
        if owner is not None and type(owner).__module__.startswith(PROTOCOL_MODULES):
            t = getattr(owner, "transport", None)
            return t if t is not None and hasattr(t, "get_write_buffer_size") else None
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value):
                stack.append(value)
    return None


def same_origin(conn: HTTPConnection, extra: list[str]) -> bool:
    """The browser's Origin is this host (or a configured extra origin)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True  # not a browser: nothing rides along without being sent on purpose
    host = conn.headers.get("host", "")
    return origin.split("://", 1)[-1] == host or origin in extra


def error(detail: str) -> bytes:
    return orjson.dumps({"type": "error", "detail": detail})


class Connection:
    __slots__ = (
        "asgi_send",
        "caller",
        "due",
        "marks",
        "ops",
        "presence",
        "receive",
        "refused",
        "replays",
        "rt",
        "sink",
        "subscribed",
        "workspace_id",
    )

    def __init__(self, rt: Realtime, receive: Receive, send: Send, caller: Caller) -> None:
        self.rt = rt
        self.receive = receive
        self.asgi_send = send
        self.caller = caller
        self.workspace_id = caller.workspace_id
        self.marks = guard.marks_of(caller)  # what a revocation names to close it (guard.access_ended)
        s = rt.settings
        # When the caller's access is asked again (loop time; see realtime.guard).
        self.due = asyncio.get_running_loop().time() + guard.next_check_in(caller, s.ws_access_recheck_s)
        self.ops = guard.Allowance(s.ws_ops_burst, s.ws_ops_per_s)
        self.replays = guard.Allowance(s.ws_replays_per_min, s.ws_replays_per_min / 60)
        self.refused = 0  # ops refused in a row
        self.presence: dict[int, str] = {}  # contact id → state announced by this socket
        transport = find_transport(send)
        self.sink: TransportSink | QueueSink
        if transport is not None:
            self.sink = TransportSink(
                self.workspace_id,
                frozenset(),
                transport,
                limit_bytes=rt.settings.ws_send_buffer * FRAME_BYTES,
            )
        else:
            self.sink = QueueSink(self.workspace_id, frozenset(), limit=rt.settings.ws_send_buffer)
        self.subscribed = False

    def send(self, payload: bytes) -> None:
        if isinstance(self.sink, TransportSink):
            self.sink.send_frame(ws_text_frame(payload))
        else:
            self.sink.send_frame(payload)

    @property
    def over(self) -> bool:
        return bool(self.sink.closed)

    def end(self, code: int, reason: str) -> None:
        """Close the socket with `code` (from any task): the serving loop then ends."""
        self.sink.cut(reason, code)

    def refuse(self, detail: str) -> None:
        """An op over budget: an error frame, and past `guard.PATIENCE` in a row, 1008."""
        self.refused += 1
        if self.refused > guard.PATIENCE:
            self.end(guard.POLICY_CODE, "too many messages")
        else:
            self.send(error(detail))

    def presence_keys(self) -> list[Key]:
        return [(self.workspace_id, c, self.caller.user_id) for c in self.presence]

    async def close(self) -> None:
        self.rt.hub.unsubscribe(self.sink)
        self.sink.closed = self.sink.closed or "closed"
        for contact in list(self.presence):
            try:
                await self.rt.presence.announce((self.workspace_id, contact, self.caller.user_id), "left")
            except Exception:
                log.exception("announcing presence left failed")

    async def _write_queue(self, sink: QueueSink) -> None:
        send = self.asgi_send
        try:
            while True:
                items = await sink.get()
                if sink.closed:
                    if sink.closed != "closed":
                        await send({"type": "websocket.close", "code": sink.code, "reason": sink.closed})
                    return
                for item in items:
                    payload = item.payload if isinstance(item, Event) else item
                    await send({"type": "websocket.send", "text": payload.decode()})
        except (OSError, RuntimeError):
            return

    async def handle(self, raw: str | bytes) -> None:
        settings = self.rt.settings
        if len(raw) > settings.ws_max_message_bytes:
            # `switchboard serve`'s protocol refuses it before reading it; this covers other servers.
            self.end(guard.TOO_BIG_CODE, "message too big")
            return
        if not self.ops.take():
            self.refuse(
                f"Too many messages: at most {settings.ws_ops_burst} at once"
                f" and {settings.ws_ops_per_s:g} a second."
            )
            return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.send(error("Frames must be JSON objects."))
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        if op in ("subscribe", "presence") and self.rt.op_budget is not None:
            if not await self.rt.op_budget(self.caller):
                self.refuse("Too many subscribe and presence messages from this user: slow down.")
                return
        refused = self.refused
        try:
            if op == "subscribe":
                await self._subscribe(msg)
            elif op == "presence":
                await self._presence(msg)
            elif op == "ping":
                self.send(b'{"type":"pong"}')
            else:
                self.send(error('Unknown op: use "subscribe", "presence" or "ping".'))
        except Exception as exc:
            # The database behind a replay, an access check or a presence write did not answer
            # (a full pool, a restart): this socket ends with "try again later", and the client
            # comes back after its back-off with the last id it has; every other socket goes on.
            log.warning("a %s op failed (%s: %s); closing its socket with 1013", op, type(exc).__name__, exc)
            self.end(guard.BUSY_CODE, "busy: try again later")
            return
        if self.refused == refused:
            self.refused = 0  # not refused this time: the count is of refusals in a row

    async def _subscribe(self, msg: dict[str, Any]) -> None:
        try:
            after = access.parse_after(msg.get("after"))
            topics = await access.check(self.rt.db, self.rt.log, self.workspace_id, msg.get("topics"), after)
        except access.Refused as exc:
            self.send(error(str(exc)))
            return
        except access.Resync:
            self.send(RESYNC)
            return
        hub = self.rt.hub
        if after is not None:
            head = await hub.head(self.workspace_id)
            if head - after > self.rt.settings.ws_replay_max_events:
                self.send(RESYNC)  # cheaper for everyone to reload than to replay that much
                return
            if after < head and not self.replays.take():
                self.refuse(
                    f"Too many replays: at most {self.rt.settings.ws_replays_per_min} a minute;"
                    " resume with the last id you have."
                )
                return
        if self.subscribed:
            hub.unsubscribe(self.sink)
        self.sink.topics = topics
        self.subscribed = True
        answer = orjson.dumps({"type": "subscribed", "topics": sorted(topics)})
        await hub.subscribe(self.sink, after, on_attached=lambda: self.send(answer))

    async def _presence(self, msg: dict[str, Any]) -> None:
        if "conversation_id" in msg:
            await self._conversation_presence(msg)
            return
        contact = msg.get("contact_id")
        state = msg.get("state")
        if state not in STATES:
            self.send(error('state must be "viewing", "editing" or "left".'))
            return
        if not isinstance(contact, int) or isinstance(contact, bool):
            self.send(error("contact_id must be an integer."))
            return
        try:
            await access.check(self.rt.db, self.rt.log, self.workspace_id, [f"contact:{contact}"], None)
        except (access.Refused, access.Resync):
            self.send(error(f"No contact {contact} in this workspace."))
            return
        if state == "left":
            self.presence.pop(contact, None)
        else:
            self.presence[contact] = state
        await self.rt.presence.announce((self.workspace_id, contact, self.caller.user_id), state)

    async def _conversation_presence(self, msg: dict[str, Any]) -> None:
        """`{"op":"presence","conversation_id":…,"state":"replying"|"left"}` (DESIGN §8)."""
        conversation = msg.get("conversation_id")
        state = msg.get("state")
        if state not in CONVERSATION_STATES:
            self.send(error('state must be "replying" or "left".'))
            return
        if (
            not isinstance(conversation, int)
            or isinstance(conversation, bool)
            or not 0 < conversation < 2**62
        ):
            self.send(error("conversation_id must be an integer."))
            return
        async with self.rt.db.sessions() as session:
            found = await self.rt.log.conversation_exists(session, self.workspace_id, conversation)
        if not found:
            self.send(error(f"No conversation {conversation} in this workspace."))
            return
        key = conversation_key(self.workspace_id, conversation, self.caller.user_id)
        if state == "left":
            self.presence.pop(key[1], None)
        else:
            self.presence[key[1]] = state
        await self.rt.presence.announce(key, state)


class Endpoint:
    """`GET /ws` as a bare ASGI app: no per-connection WebSocket object or session wrapper
    (a socket's memory is most of what an idle connection costs). Mount it as a route, or put
    `Realtime.wrap(app)` in front of the app to skip the middleware stack for /ws as well."""

    def __init__(self, rt: Realtime) -> None:
        self.rt = rt

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return serve(self.rt, scope, receive, send)


async def serve(rt: Realtime, scope: Scope, receive: Receive, send: Send) -> None:
    """One socket from handshake to close, in ONE coroutine: an idle socket costs its frame."""
    if (await receive())["type"] != "websocket.connect":
        return
    http = HTTPConnection(scope)
    generation = rt.admissions.generation
    try:
        caller = await rt.authenticate(http)
    except Exception:
        await send(
            {"type": "websocket.close", "code": 1008, "reason": "Sign in first: send an access token."}
        )
        return
    if getattr(caller, "via_cookie", False) and not same_origin(http, rt.settings.extra_origins):
        # A cookie rides along with any site's WebSocket: only our own pages may use it.
        await send({"type": "websocket.close", "code": 1008, "reason": "Cross-origin WebSocket refused."})
        return
    del http  # its parsed headers would live as long as the socket
    await send({"type": "websocket.accept"})
    if not await guard.admitted(rt, caller):
        # Accepted first so that the browser sees the code, renews its session and comes back.
        await send({"type": "websocket.close", "code": guard.SIGNED_OUT_CODE, "reason": guard.SIGNED_OUT})
        return
    conn = Connection(rt, receive, send, caller)
    rt.connections.add(conn)
    guard.joined(rt, conn, generation)
    sink = conn.sink
    writer = None
    if isinstance(sink, QueueSink):
        writer = asyncio.create_task(conn._write_queue(sink), name="ws-writer")
    try:
        while not sink.closed:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes")
            if raw is not None:
                await conn.handle(raw)
    finally:
        rt.connections.discard(conn)
        if writer is not None:
            writer.cancel()
        await conn.close()

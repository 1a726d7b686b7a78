"""The servers under test, one per process: `python -m bench.fanout.servers STACK --port P ...`.

ours         Switchboard's realtime layer (uvicorn with our WebSocket protocol, event log → relay →
             Redis → hub → sockets), as `switchboard serve` runs it
limit        bare `websockets`: each event's frame built once and written to every transport
broadcaster  Starlette + broadcaster 0.3.1 (Redis), one subscriber queue per socket, uvicorn
socketio     python-socketio + AsyncRedisManager, uvicorn
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

UVICORN = {
    "host": "127.0.0.1",
    "log_level": "warning",
    "loop": "uvloop",
    "http": "httptools",
    "backlog": 8192,
}


def event_body(i: int, step: int) -> dict[str, Any]:
    """~200 bytes, like a `message.status` envelope; `s` (step) and `t` (publish time) for the meter."""
    data = {
        "s": step,
        "t": time.time(),
        "message_id": 100000 + i,
        "contact_id": 1,
        "channel": "email",
        "status": "delivered",
        "provider": "sandbox",
        "reason": None,
    }
    return data


def ours(args: argparse.Namespace) -> None:
    import uvicorn
    from starlette.applications import Starlette

    from realtime.service import Realtime
    from server.db import Database
    from server.events.log import SqlEventLog
    from server.runtime import settle_heap
    from server.settings import Settings

    class Caller:
        def __init__(self, ws: int, user: int) -> None:
            self.workspace_id, self.user_id = ws, user

    async def token_auth(conn: Any) -> Caller:
        ws, user = conn.query_params.get("token", "0:0").split(":")
        return Caller(int(ws), int(user))

    settings = Settings(env="test", database_url=args.db, redis_url=args.redis, secret_key="b" * 40)
    db = Database(args.db, pool_size=5, max_overflow=5)
    rt = Realtime(settings, db, authenticate=token_auth, log=SqlEventLog(), prefix=args.prefix)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.stop()

    app = rt.wrap(Starlette(routes=rt.routes, lifespan=lifespan))
    settle_heap()  # as `switchboard serve` does
    uvicorn.run(app, port=args.port, ws=args.ws, ws_per_message_deflate=False, **UVICORN)


def limit(args: argparse.Namespace) -> None:
    import uvloop
    from websockets.asyncio.server import ServerConnection, serve

    from realtime.wire import ws_text_frame

    conns: set[ServerConnection] = set()
    ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        if len(conns) >= args.clients:
            ready.set()
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def publish() -> None:
        await ready.wait()
        await asyncio.sleep(1.0)
        i = 0
        for step, rate in enumerate(args.rates):
            t0 = time.monotonic()
            n = int(rate * args.step_s)
            for k in range(n):
                due = t0 + k / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                i += 1
                env = {"id": i, "type": "message.status", "ts": "", "data": event_body(i, step)}
                frame = ws_text_frame(orjson.dumps(env))
                for c in conns:
                    c.transport.write(frame)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", args.port, compression=None, ping_interval=None, backlog=8192):
            await publish() if args.rates else await asyncio.Future()
            await asyncio.Future()

    uvloop.run(main())


def broadcaster(args: argparse.Namespace) -> None:
    import uvicorn
    from broadcaster import Broadcast
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    broadcast = Broadcast(args.redis)

    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):  # a client gone when the run ends
            async with broadcast.subscribe(channel=args.prefix + "board") as subscriber:
                async for event in subscriber:  # type: ignore[union-attr]
                    await websocket.send_text(event.message)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        # Held for the process life: avoids broadcaster 0.3.1's start-up races (PEERS.md).
        async with broadcast.subscribe(channel=args.prefix + "board") as keep:
            drain = asyncio.create_task(_drain(keep))
            yield
            drain.cancel()
        await broadcast.disconnect()

    async def _drain(sub: Any) -> None:
        async for _ in sub:
            pass

    app = Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)], lifespan=lifespan)
    uvicorn.run(app, port=args.port, ws="websockets-sansio", ws_per_message_deflate=False, **UVICORN)


def socketio_server(args: argparse.Namespace) -> None:
    import socketio
    import uvicorn

    mgr = socketio.AsyncRedisManager(args.redis, channel=args.prefix + "socketio")
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr, cors_allowed_origins="*")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any]) -> None:
        await sio.enter_room(sid, "board")

    app = socketio.ASGIApp(sio)
    uvicorn.run(app, port=args.port, ws="websockets-sansio", ws_per_message_deflate=False, **UVICORN)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stack", choices=["ours", "limit", "broadcaster", "socketio"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db")
    p.add_argument("--redis")
    p.add_argument("--prefix", default="sbbench:")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",") if x], default=[])
    p.add_argument("--step-s", type=float, default=3.0)
    p.add_argument(
        "--ws",
        default="realtime.wsprotocol:WebSocketProtocol",
        help="WebSocket protocol under ours: switchboard serve's (default) or a uvicorn name",
    )
    args = p.parse_args()
    {"ours": ours, "limit": limit, "broadcaster": broadcaster, "socketio": socketio_server}[args.stack](args)


if __name__ == "__main__":
    main()

"""A real HTTP server on 127.0.0.1 that plays a webhook receiver: it records every request and
answers per path from a script (status codes, or "hang" to stall until released)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

Reply = int | str  # a status code, or "hang"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    base: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    defaults: dict[str, Reply] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)  # what a path answers, when not the default
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def at(self, name: str) -> list[Received]:
        return [r for r in self.requests if r.path == f"/{name}"]

    async def handle(self, request: Request) -> PlainTextResponse:
        name = request.path_params["name"]
        self.requests.append(
            Received(
                f"/{name}",
                {k.lower(): v for k, v in request.headers.items()},
                await request.body(),
                time.monotonic(),
            )
        )
        script = self.scripts.get(name)
        reply = script.pop(0) if script else self.defaults.get(name, 200)
        if reply == "hang":
            try:
                await asyncio.wait_for(self.release.wait(), 30)
            except TimeoutError:
                pass
            reply = 200
        text = self.bodies.get(name, "nope" if int(reply) >= 400 else "ok")
        return PlainTextResponse(text, status_code=int(reply))


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/{name}", receiver.handle, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    receiver.base = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await task
        sock.close()


def verify_signature(header: str, body: bytes, secret: str, *, tolerance_s: int = 300) -> bool:
    """An independent check of `t=<unix>,v1=<hex>[,v1=<hex>]`, written from the contract with
    nothing but `hmac`: true when one `v1` is HMAC-SHA256(secret, "<t>.<body>")."""
    items = [part.split("=", 1) for part in header.split(",")]
    timestamps = [v for k, v in items if k == "t"]
    if len(timestamps) != 1 or abs(time.time() - int(timestamps[0])) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in items if k == "v1")

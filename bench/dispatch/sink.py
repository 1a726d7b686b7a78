"""A local HTTP "provider" that records every send by its `Idempotency-Key`.

Like a provider that deduplicates, it delivers a key once: a repeated key is answered 200 with the
first answer and counted as a replay, not delivered again. `respond` may script other answers
(500, 429 with Retry-After, 400 …) for tests. `GET /_stats` returns what it saw and `POST /_reset`
forgets it, for a sink running in another process (`python -m bench.dispatch.sink --port N`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools
import orjson


@dataclass
class Received:
    key: str
    at: float  # wall clock, seconds
    body: bytes
    path: str
    headers: dict[str, str]


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Received], Answer | None]  # None: accept and deliver

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class Sink:
    def __init__(self, respond: Responder | None = None) -> None:
        self.respond = respond
        self.requests: list[Received] = []
        self.counts: Counter[str] = Counter()  # requests per key
        self.delivered: dict[str, float] = {}  # key -> when first delivered
        self.replays = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Sink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._transports):
                t.close()
            await self._server.wait_closed()

    def stats(self) -> dict[str, object]:
        return {
            "requests": len(self.requests),
            "distinct": len(self.counts),
            "delivered": len(self.delivered),
            "replays": self.replays,
            "first": self.delivered,
        }

    def handle(self, r: Received) -> Answer:
        if r.path == "/_stats":
            return Answer(body=orjson.dumps(self.stats()))
        if r.path == "/_reset":
            self.requests.clear()
            self.counts.clear()
            self.delivered.clear()
            self.replays = 0
            return Answer()
        self.requests.append(r)
        self.counts[r.key] += 1
        answer = self.respond(r) if self.respond is not None else None
        if answer is not None and answer.status >= 300:
            return answer
        if r.key in self.delivered:
            self.replays += 1
        else:
            self.delivered[r.key] = r.at
        return answer or Answer()


class _Protocol(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sink._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.sink._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self._url).path.decode()
        received = Received(
            self._headers.get("idempotency-key", ""), time.time(), b"".join(self._body), path, self._headers
        )
        answer = self.sink.handle(received)
        head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Status')}"]
        headers = {
            "content-type": "application/json",
            **answer.headers,
            "content-length": str(len(answer.body)),
        }
        head.extend(f"{k}: {v}" for k, v in headers.items())
        assert self.transport is not None
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def _serve(port: int) -> None:
    sink = await Sink().start(port=port)
    print(sink.port, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description="local HTTP sink that records Idempotency-Keys")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(args.port))
    except ImportError:
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()

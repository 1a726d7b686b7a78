"""realtime.wsprotocol under a real uvicorn server, against real clients: the websockets library,
and a raw socket client for what a well-behaved library will not do."""

from __future__ import annotations

import asyncio
import gc
import struct
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import SERVER, Protocol

from realtime.wsprotocol import WebSocketProtocol
from tests.conftest import until
from tests.realtime import rawws
from tests.realtime.conftest import uvicorn_on_free_port


class EchoApp:
    """Echoes what it gets; a few paths behave badly on purpose. Records every disconnect."""

    def __init__(self) -> None:
        self.disconnects: list[dict[str, Any]] = []
        self.late_errors: list[OSError] = []
        self.sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        path = scope["path"]
        if path == "/refuse":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == "/crash":
            raise RuntimeError("the app failed before accepting")
        if path == "/silent":
            return
        subprotocol = "sb.v1" if "sb.v1" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": [(b"x-app", b"echo")]})
        if path == "/close":
            await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        if path == "/flood":
            chunk = "x" * 65536
            for i in range(200):
                await send({"type": "websocket.send", "text": f"{i:04d}{chunk}"})
                self.sent = i + 1
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message)
                if path == "/late":  # too late to answer: the peer has closed
                    try:
                        await send({"type": "websocket.send", "text": "anyone there?"})
                    except OSError as exc:
                        self.late_errors.append(exc)
                return
            if message.get("text") == "scope":
                described = {
                    "path": scope["path"],
                    "query_string": scope["query_string"].decode(),
                    "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                    "scheme": scope["scheme"],
                    "client": scope["client"][0],
                    "server": list(scope["server"]),
                }
                await send({"type": "websocket.send", "bytes": orjson.dumps(described)})
            elif message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


def served(app: EchoApp, **config: Any) -> AbstractAsyncContextManager[tuple[int, uvicorn.Server]]:
    return uvicorn_on_free_port(app, log_level="critical", lifespan="off", **config)


async def test_echoes_text_and_bytes_and_describes_the_request_in_the_scope() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        url = f"ws://127.0.0.1:{port}/r%C3%A9alm/ws?token=1:2"
        async with connect(url, subprotocols=["sb.v1"], additional_headers={"X-Trace": "abc"}) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "sb.v1"
            assert ws.response is not None and ws.response.headers["x-app"] == "echo"
            assert "server" in ws.response.headers and "date" in ws.response.headers
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.send("scope")
            scope = orjson.loads(await ws.recv())
    assert scope["path"] == "/réalm/ws"
    assert scope["query_string"] == "token=1:2"
    headers = dict(scope["headers"])
    assert headers["x-trace"] == "abc" and headers["upgrade"] == "websocket"
    assert all(name == name.lower() for name in headers)
    assert (
        scope["scheme"] == "ws" and scope["client"] == "127.0.0.1" and scope["server"] == ["127.0.0.1", port]
    )


async def test_a_fragmented_message_reaches_the_app_whole() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send(["first ", "second ", "third"])
            assert await ws.recv() == "first second third"
            await ws.send([b"ab", b"cd"])
            assert await ws.recv() == b"abcd"


async def test_a_client_ping_is_answered_and_its_close_code_reaches_the_app() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            pong = await ws.ping(b"are you there")
            latency = await asyncio.wait_for(pong, 2)
            assert latency >= 0
            await ws.close(4000, "done here")
        await until(lambda: app.disconnects)
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 4000, "reason": "done here"}]


async def test_the_app_closing_gives_the_client_its_code_and_reason() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        async with connect(f"ws://127.0.0.1:{port}/close") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4001 and ws.close_reason == "bye"


async def test_sending_after_the_peer_closed_raises_a_disconnect_not_a_protocol_error() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        async with connect(f"ws://127.0.0.1:{port}/late") as ws:
            await ws.close(1000)
        await until(lambda: app.late_errors)
    assert type(app.late_errors[0]).__name__ == "ClientDisconnected"


@pytest.mark.parametrize(("path", "status"), [("/refuse", 403), ("/crash", 500), ("/silent", 500)])
async def test_an_app_that_does_not_accept_answers_http(path: str, status: int) -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"ws://127.0.0.1:{port}{path}"):
                pass
    assert caught.value.response.status_code == status


async def test_a_request_that_is_not_a_websocket_handshake_is_refused() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # No Sec-WebSocket-Key: websockets' handshake rejects it before the app runs.
        writer.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 400")
    assert app.disconnects == []


async def test_invalid_utf8_in_a_text_frame_closes_with_1007() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        reader, writer = await rawws.connect(port, "/")
        writer.write(rawws.masked(0x1, b"\xff\xfe broken"))
        opcode, payload = await asyncio.wait_for(rawws.read_frame(reader), 5)
        writer.close()
        await until(lambda: app.disconnects)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007
    assert app.disconnects[0]["code"] == 1007


async def test_a_message_over_the_size_limit_closes_with_1009() -> None:
    app = EchoApp()
    async with served(app, ws_max_size=1024) as (port, _server):
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            await ws.send("y" * 2000)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009


async def test_keepalive_drops_a_peer_that_stops_answering_pings_and_keeps_one_that_answers() -> None:
    app = EchoApp()
    # A patient timeout: the answering client shares this loop, so a stall on a loaded machine must
    # not look like silence.
    async with served(app, ws_ping_interval=0.2, ws_ping_timeout=1.0) as (port, _server):
        async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as alive:
            reader, writer = await rawws.connect(port, "/")  # reads pings, never answers them
            opcode = 0
            async with asyncio.timeout(5):
                while opcode != 0x8:
                    opcode, payload = await rawws.read_frame(reader)
            writer.close()
            assert struct.unpack("!H", payload[:2])[0] == 1011
            await asyncio.sleep(1.5)  # several ping rounds: the library client answers each
            await alive.send("still here")
            assert await alive.recv() == "still here"


async def test_a_client_that_does_not_read_holds_back_the_sender_instead_of_filling_memory() -> None:
    app = EchoApp()
    async with served(app) as (port, _server):
        reader, writer = await rawws.connect(port, "/flood", rcvbuf=65536)
        await asyncio.sleep(0.5)
        held_back_at = app.sent
        got: list[int] = []
        async with asyncio.timeout(20):
            while len(got) < 200:
                opcode, payload = await rawws.read_frame(reader)
                if opcode == 0x1:
                    got.append(int(payload[:4]))
        writer.close()
    assert held_back_at < 200, "the sends should wait for the transport to drain"
    assert got == list(range(200))


async def test_shutting_the_server_down_closes_sockets_with_1012() -> None:
    app = EchoApp()
    async with served(app) as (port, server):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            server.should_exit = True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1012
    assert app.disconnects and app.disconnects[0]["code"] == 1012


def server_side_objects() -> dict[str, int]:
    """Connection objects of the server side that the cyclic GC can see, by kind."""
    kinds = {"WebSocketProtocol": 0, "HttpToolsProtocol": 0, "ServerProtocol": 0, "Protocol": 0}
    for obj in gc.get_objects():
        if isinstance(obj, WebSocketProtocol):
            kinds["WebSocketProtocol"] += 1
        elif type(obj).__name__ == "HttpToolsProtocol":
            kinds["HttpToolsProtocol"] += 1
        elif isinstance(obj, Protocol) and obj.side is SERVER:
            kinds[type(obj).__name__ if type(obj).__name__ == "ServerProtocol" else "Protocol"] += 1
    return kinds


async def test_an_open_socket_keeps_no_handshake_objects_and_a_closed_one_leaves_no_garbage() -> None:
    """What an idle socket costs: with the cyclic GC off, anything caught in a reference cycle
    would stay visible here."""
    app = EchoApp()
    async with served(app) as (port, _server):
        gc.collect()
        gc.disable()
        try:
            clients = [await connect(f"ws://127.0.0.1:{port}/") for _ in range(10)]
            for ws in clients:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            assert server_side_objects() == {
                "WebSocketProtocol": 10,
                "HttpToolsProtocol": 0,
                "ServerProtocol": 0,
                "Protocol": 10,
            }
            for ws in clients:
                await ws.close()
            await until(lambda: len(app.disconnects) == 10)
            await asyncio.sleep(0.1)
            assert server_side_objects() == {
                "WebSocketProtocol": 0,
                "HttpToolsProtocol": 0,
                "ServerProtocol": 0,
                "Protocol": 0,
            }
        finally:
            gc.enable()

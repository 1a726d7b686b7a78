"""RFC 6455 conformance of realtime.wsprotocol, driven from a raw socket: what a well-behaved
client library will not send. Each test names the section it checks."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.conftest import until
from tests.realtime import rawws
from tests.realtime.conftest import uvicorn_on_free_port
from tests.realtime.test_wsprotocol import EchoApp

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    n = len(payload)
    head = struct.pack("!B", (0x80 if fin else 0) | opcode)
    bit = 0x80 if mask else 0
    if n < 126:
        head += struct.pack("!B", bit | n)
    elif n < 1 << 16:
        head += struct.pack("!BH", bit | 126, n)
    else:
        head += struct.pack("!BQ", bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.masked_frames = 0

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def recv(self, wait_s: float = 5.0) -> tuple[int, bytes]:
        async with asyncio.timeout(wait_s):
            b0, b1 = await self.reader.readexactly(2)
            if b1 & 0x80:
                self.masked_frames += 1
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            if b1 & 0x80:
                await self.reader.readexactly(4)
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self) -> int:
        """The code of the server's Close frame (skipping data frames before it); then EOF."""
        while True:
            opcode, payload = await self.recv()
            if opcode == CLOSE:
                assert await self.reader.read() == b"", "the server closes the TCP connection after its Close"
                return struct.unpack("!H", payload[:2])[0] if payload else 1005


@asynccontextmanager
async def peer(**config: Any) -> AsyncIterator[tuple[Peer, EchoApp]]:
    app = EchoApp()
    async with uvicorn_on_free_port(app, log_level="critical", lifespan="off", **config) as (port, _server):
        reader, writer = await rawws.connect(port, "/")
        p = Peer(reader, writer)
        try:
            yield p, app
        finally:
            writer.close()
            assert p.masked_frames == 0, "a server never masks its frames (§5.1)"


async def test_a_ping_between_fragments_is_answered_and_the_message_arrives_whole() -> None:
    # §5.4: control frames MAY be injected in the middle of a fragmented message.
    async with peer() as (p, _app):
        p.send(frame(TEXT, b"ab", fin=False), frame(PING, b"p1"), frame(CONT, b"cd"))
        assert await p.recv() == (PONG, b"p1")
        assert await p.recv() == (TEXT, b"abcd")


async def test_a_close_between_fragments_is_answered_cleanly() -> None:
    # §5.4 and §5.5.1: a Close between fragments is a Close; the unfinished message is dropped.
    async with peer() as (p, app):
        p.send(frame(TEXT, b"half a mess", fin=False), frame(CLOSE, close_payload(1000, b"bye")))
        assert await p.close_code() == 1000
        await until(lambda: app.disconnects)
        assert app.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]


async def test_a_continuation_without_a_start_is_a_protocol_error() -> None:
    async with peer() as (p, _app):
        p.send(frame(CONT, b"orphan"))
        assert await p.close_code() == 1002


async def test_a_new_message_before_the_last_fragment_is_a_protocol_error() -> None:
    async with peer() as (p, _app):
        p.send(frame(TEXT, b"first", fin=False), frame(TEXT, b"second"))
        assert await p.close_code() == 1002


async def test_a_control_frame_over_125_bytes_is_a_protocol_error() -> None:
    # §5.5: all control frames MUST have a payload length of 125 bytes or less.
    async with peer() as (p, _app):
        p.send(frame(PING, b"x" * 126))
        assert await p.close_code() == 1002


async def test_a_fragmented_control_frame_is_a_protocol_error() -> None:
    # §5.5: control frames MUST NOT be fragmented.
    async with peer() as (p, _app):
        p.send(frame(PING, b"x", fin=False))
        assert await p.close_code() == 1002


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
async def test_a_close_code_that_may_not_be_sent_is_a_protocol_error(code: int) -> None:
    # §7.4: 1005, 1006 and 1015 are never sent; 0-999 unused; only 3000-4999 are free for use.
    async with peer() as (p, _app):
        p.send(frame(CLOSE, close_payload(code)))
        assert await p.close_code() == 1002


async def test_a_close_with_a_one_byte_payload_is_a_protocol_error() -> None:
    async with peer() as (p, _app):
        p.send(frame(CLOSE, b"\x03"))
        assert await p.close_code() == 1002


async def test_a_close_reason_that_is_not_utf8_is_invalid_data() -> None:
    # §5.5.1 and §8.1: the reason is UTF-8; invalid data closes with 1007.
    async with peer() as (p, _app):
        p.send(frame(CLOSE, close_payload(1000, b"\xff\xfe")))
        assert await p.close_code() == 1007


async def test_a_text_message_that_is_not_utf8_is_invalid_data() -> None:
    async with peer() as (p, _app):
        p.send(frame(TEXT, b"\xc3", fin=False), frame(CONT, b"\x28"))
        assert await p.close_code() == 1007


async def test_an_unmasked_client_frame_is_a_protocol_error() -> None:
    # §5.1: a server MUST close the connection upon receiving an unmasked frame.
    async with peer() as (p, _app):
        p.send(frame(TEXT, b"plain", mask=False))
        assert await p.close_code() == 1002


async def test_an_unknown_opcode_and_reserved_bits_are_protocol_errors() -> None:
    async with peer() as (p, _app):
        p.send(frame(0x3, b"?"))
        assert await p.close_code() == 1002
    async with peer() as (p, _app):
        p.send(bytes([frame(TEXT, b"rsv")[0] | 0x40]) + frame(TEXT, b"rsv")[1:])
        assert await p.close_code() == 1002


async def test_a_message_over_the_size_limit_is_closed_with_1009_before_it_is_read() -> None:
    async with peer(ws_max_size=1024) as (p, app):
        p.send(frame(TEXT, b"x" * 1024))
        assert await p.recv() == (TEXT, b"x" * 1024)
        # Only the header is sent: the server refuses on the announced length.
        p.send(frame(TEXT, b"y" * 1025)[:4])
        assert await p.close_code() == 1009
        await until(lambda: app.disconnects)
        assert app.disconnects[0]["code"] == 1009


async def test_fragments_adding_up_past_the_size_limit_are_closed_with_1009() -> None:
    async with peer(ws_max_size=1024) as (p, _app):
        p.send(frame(TEXT, b"x" * 1000, fin=False), frame(CONT, b"x" * 100))
        assert await p.close_code() == 1009

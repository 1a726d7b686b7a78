"""Bytes on the wire: RFC 6455 server frames (the relay's batch format is beside `Event`, in types)."""

from __future__ import annotations

import struct


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    head = 0x80 | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", head, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", head, 126, n) + payload
    return struct.pack("!BBQ", head, 127, n) + payload


def ws_text_frame(payload: bytes) -> bytes:
    return ws_frame(0x1, payload)


def ws_close_frame(code: int, reason: str) -> bytes:
    return ws_frame(0x8, struct.pack("!H", code) + reason.encode()[:123])

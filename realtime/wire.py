"""Bytes on the wire: RFC 6455 server frames, and the relay's batch format on the backend."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtime.types import Event


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


# A batch on the backend: one line per event, `id \t type \t contact_id \t envelope-json`.
# orjson escapes tab and newline inside strings, so neither occurs raw in the envelope.
def encode_batch(events: list[Event]) -> bytes:
    return b"\n".join(
        b"%d\t%s\t%s\t%s"
        % (e.id, e.type.encode(), b"" if e.contact_id is None else b"%d" % e.contact_id, e.payload)
        for e in events
    )


def decode_batch(workspace_id: int, data: bytes) -> Iterator[Event]:
    from realtime.types import Event

    for line in data.split(b"\n"):
        if not line:
            continue
        id_, type_, contact, payload = line.split(b"\t", 3)
        yield Event(workspace_id, int(id_), type_.decode(), int(contact) if contact else None, payload)

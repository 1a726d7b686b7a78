"""Test clients: a WebSocket speaking the /ws protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect


class Client:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> Client:
        return cls(await connect(url, compression=None, max_queue=None, additional_headers=headers))

    async def send(self, **msg: Any) -> None:
        await self.conn.send(orjson.dumps(msg).decode())

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.conn.recv(), wait_s))  # type: ignore[no-any-return]

    async def subscribe(self, topics: list[str], after: int | None = None) -> dict[str, Any]:
        await self.send(op="subscribe", topics=topics, after=after)
        return await self.recv()

    async def events_until(self, last_id: int, wait_s: float = 10.0) -> list[dict[str, Any]]:
        """Envelopes received until one with id >= last_id (pings skipped)."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(wait_s):
            while not out or out[-1]["id"] < last_id:
                msg = await self.recv(wait_s)
                if "id" in msg:
                    out.append(msg)
        return out

    async def nothing_for(self, seconds: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        try:
            while True:
                got.append(await self.recv(seconds))
        except TimeoutError:
            return got

    async def close(self) -> None:
        await self.conn.close()

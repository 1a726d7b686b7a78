"""SIGKILL a `switchboard worker` in the middle of 2,000 sends; a second worker finishes the job.

The provider is the sandbox POSTing to a local sink that deduplicates by `Idempotency-Key`, as
providers with an idempotency mechanism do. The messages the dead worker had in flight stay in
`sending` until their lease runs out; the second worker takes them back and sends them again with
the same key. Asserted: every message ends `sent` exactly once in its history, the sink saw exactly
the 2,000 expected keys (none lost, none under a second key) and delivered each once; the resends
it absorbed are at most the messages that were in flight at the kill.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time

import pytest
from sqlalchemy import func, insert, select

from bench.dispatch.sink import Sink
from server.db import Database, utcnow
from server.messages.models import Message, MessageEvent
from server.providers.models import Provider
from server.workspaces.models import Workspace

MESSAGES = 2000
LEASE_S = 3


async def _seed(db: Database, sink_url: str) -> tuple[int, list[int]]:
    now = utcnow()
    async with db.transaction() as s:
        ws = Workspace(name="Faults")
        s.add(ws)
        await s.flush()
        s.add(
            Provider(
                workspace_id=ws.id,
                name="sandbox",
                kind="sandbox",
                channel="email",
                priority=1,
                config={"delivery_delay_ms": -1, "sink_url": sink_url},
                webhook_key=secrets.token_hex(16),
            )
        )
        rows = [
            {
                "workspace_id": ws.id,
                "channel": "email",
                "to_address": f"user{i}@example.test",
                "subject": "Hello",
                "body": f"Message {i}",
                "variables": {},
                "send_at": now,
                "next_attempt_at": now,
                "status": "queued",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(MESSAGES)
        ]
        ids = list((await s.execute(insert(Message).returning(Message.id), rows)).scalars())
        return ws.id, ids


async def _worker(url: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_DATABASE_URL": url,
        "SWITCHBOARD_SEND_LEASE_S": str(LEASE_S),
        "SWITCHBOARD_DISPATCHER_POLL_S": "0.2",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS": "true",  # the sink listens on 127.0.0.1
    }
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "server.cli", "worker", env=env)


async def _count(db: Database, status: str) -> int:
    async with db.sessions() as s:
        return int((await s.execute(select(func.count()).where(Message.status == status))).scalar_one())


@pytest.mark.timeout(60)
async def test_sigkilled_worker_loses_nothing_and_sends_each_message_once(pg_url: str) -> None:
    sink = await Sink().start()
    db = Database(pg_url)
    first = second = None
    try:
        workspace_id, ids = await _seed(db, sink.url)
        began = time.monotonic()
        first = await _worker(pg_url)
        while len(sink.delivered) < MESSAGES // 4:  # well into the run
            assert time.monotonic() - began < 30, "the first worker never got going"
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        in_flight = await _count(db, "sending")
        delivered_at_kill = len(sink.delivered)
        assert in_flight > 0, "the kill did not land mid-batch"
        assert delivered_at_kill < MESSAGES

        second = await _worker(pg_url)
        while await _count(db, "sent") < MESSAGES:
            assert time.monotonic() - began < 50, f"not finished: {await _count(db, 'sent')} sent"
            await asyncio.sleep(0.1)

        async with db.sessions() as s:
            statuses = dict(
                (await s.execute(select(Message.status, func.count()).group_by(Message.status))).all()
            )
            sent_rows = dict(
                (
                    await s.execute(
                        select(MessageEvent.message_id, func.count())
                        .where(MessageEvent.status == "sent")
                        .group_by(MessageEvent.message_id)
                    )
                ).all()
            )
        expected = {f"sb-{workspace_id}-{i}" for i in ids}
        resent = len(sink.requests) - len(sink.counts)
        print(
            f"\nSIGKILL fault: {MESSAGES} messages, {delivered_at_kill} delivered before the kill, "
            f"{in_flight} in flight at the kill; sink: {len(sink.requests)} requests, {len(sink.counts)} "
            f"distinct keys, {len(sink.delivered)} delivered, {sink.replays} resends deduplicated; "
            f"{time.monotonic() - began:.1f}s"
        )
        assert statuses == {"sent": MESSAGES}  # none lost, none failed
        assert set(sent_rows) == set(ids) and set(sent_rows.values()) == {1}  # sent exactly once each
        assert set(sink.counts) == expected  # one stable key per message, across both workers
        assert len(sink.delivered) == MESSAGES  # delivered once per key
        assert resent == sink.replays <= in_flight  # only what the dead worker had in flight came again
        assert max(sink.counts.values()) <= 2
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        await db.dispose()
        await sink.close()

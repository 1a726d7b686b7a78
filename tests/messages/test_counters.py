"""The board's maintained counters equal a `COUNT(*)` over the messages, whatever happened."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, insert, select, update

from server.auth import service as auth_service
from server.contacts.models import Contact
from server.db import Database, utcnow
from server.events.service import emit_many
from server.messages import claims, counters, service
from server.messages.claims import Outcome
from server.messages.models import Message, MessageStatus
from server.messages.status import STATE_COLUMNS, MessageState, Transitions
from server.templates import render

STATUSES = [s for s in MessageStatus]
# What providers and people send: forward moves, late ones (older than the current status) and
# repeats; `Transitions` refuses those the machine does not allow.
WEBHOOK_STATUSES = ["sent", "delivered", "bounced", "failed", "sent", "delivered", "queued", "sending"]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


async def _setup(db: Database, n_contacts: int) -> tuple[int, list[Contact]]:
    now = utcnow()
    async with db.transaction() as s:
        ws = await auth_service.get_or_create_workspace(s, name="Counters")
        await s.execute(
            insert(Contact),
            [
                {
                    "workspace_id": ws.id,
                    "name": f"P{i}",
                    "email": f"p{i}@example.test" if i % 5 else None,  # some cannot get email
                    "phone": f"+1415555{i:04d}",
                    "tags": [],
                    "attributes": {},
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n_contacts)
            ],
        )
        people = list((await s.execute(select(Contact).where(Contact.workspace_id == ws.id))).scalars())
    return ws.id, people


async def _create(db: Database, rng: random.Random, workspace_id: int, people: list[Contact]) -> None:
    compiled = render.compile_message("Hi {{ name }}", "Hello {{ name }}")
    now = utcnow()
    messages = []
    for p in rng.sample(people, k=rng.randint(1, 6)):
        # Created now or in an earlier hour (a different bucket); due now or later.
        created = now - dt.timedelta(hours=rng.choice([0, 0, 1, 3, 30]), minutes=rng.randint(0, 59))
        send_at = created + dt.timedelta(minutes=rng.choice([0, 0, 10**6]))
        messages.append(
            service.build_message(
                workspace_id=workspace_id,
                contact=p,
                channel=rng.choice(["email", "sms"]),
                compiled=compiled,
                variables={},
                send_at=send_at,
                now=created,
            )
        )
    async with db.transaction() as s:
        await service.record_created(s, workspace_id, messages)
        # Make the far-future ones due, so the dispatcher can claim scheduled messages too.
        await s.execute(update(Message).where(Message.status == "scheduled").values(next_attempt_at=now))


async def _dispatch(db: Database, rng: random.Random) -> None:
    async with db.transaction() as s:
        held = await claims.claim_due(s, limit=rng.randint(1, 8), lease_s=rng.choice([-1, 60]))
    if rng.random() < 0.3:
        return  # a worker that died: its leases expire and `reclaim_expired` takes them back
    outcomes = [
        Outcome(
            m,
            rng.choice([MessageStatus.sent, MessageStatus.queued, MessageStatus.failed]),
            next_attempt_at=utcnow(),
        )
        for m in held
    ]
    async with db.transaction() as s:
        await claims.finish(s, outcomes)


async def _webhooks(db: Database, rng: random.Random, workspace_id: int) -> None:
    async with db.transaction() as s:
        rows = (await s.execute(select(*STATE_COLUMNS).where(Message.workspace_id == workspace_id))).all()
        if not rows:
            return
        moves = Transitions(workspace_id)
        states = {r.id: MessageState(*r) for r in rows}
        for _ in range(rng.randint(1, 10)):  # several events of one message in one delivery, too
            moves.move(rng.choice(list(states.values())), rng.choice(WEBHOOK_STATUSES))
        await emit_many(s, workspace_id, await moves.write(s))


async def _cancel(db: Database, rng: random.Random, workspace_id: int) -> None:
    async with db.transaction() as s:
        ids = list(
            (await s.execute(select(Message.id).where(Message.workspace_id == workspace_id))).scalars()
        )
        if not ids:
            return
        try:
            await service.cancel_message(
                s, workspace_id=workspace_id, message_id=rng.choice(ids), user_id=None
            )
        except service.NotCancelable:
            pass


async def _truth(db: Database) -> dict[counters.Key, int]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(Message.workspace_id, Message.created_at, Message.status, Message.channel)
        )
        out: dict[counters.Key, int] = {}
        for ws, created_at, status, channel in rows:
            key = (ws, counters.bucket_of(created_at), status, channel)
            out[key] = out.get(key, 0) + 1
        return out


async def _counted(db: Database) -> dict[counters.Key, int]:
    async with db.transaction() as s:
        return await counters.totals(s)


@pytest.mark.parametrize("seed", [1, 2])
async def test_counters_equal_count_star_after_random_status_histories(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    workspace_id, people = await _setup(db, 20)
    for step in range(60):
        action = rng.choice(
            ["create", "create", "dispatch", "dispatch", "reclaim", "webhooks", "cancel", "fold"]
        )
        if action == "create":
            await _create(db, rng, workspace_id, people)
        elif action == "dispatch":
            await _dispatch(db, rng)
        elif action == "reclaim":
            async with db.transaction() as s:
                await claims.reclaim_expired(s, max_attempts=rng.choice([1, 3]))
        elif action == "webhooks":
            await _webhooks(db, rng, workspace_id)
        elif action == "cancel":
            await _cancel(db, rng, workspace_id)
        else:
            async with db.transaction() as s:
                await counters.fold(s)
        if step % 10 == 9:
            assert await _counted(db) == await _truth(db), f"after step {step} ({action})"
    assert await _counted(db) == await _truth(db)
    async with db.transaction() as s:
        await counters.fold(s)
        assert await counters.fold(s) == set()  # nothing left to fold
    assert await _counted(db) == await _truth(db)
    statuses = {k[2] for k in await _truth(db)}
    assert len(statuses) >= 5, statuses  # the history went through many states


async def test_the_board_window_is_the_current_hour_and_the_24_before(db: Database) -> None:
    workspace_id, people = await _setup(db, 3)
    compiled = render.compile_message("", "Hi")
    now = utcnow()
    ages = {
        "current": dt.timedelta(0),
        "23h": dt.timedelta(hours=23),
        "24h": dt.timedelta(hours=24),
        "26h": dt.timedelta(hours=26),
    }
    async with db.transaction() as s:
        await service.record_created(
            s,
            workspace_id,
            [
                service.build_message(
                    workspace_id=workspace_id,
                    contact=people[1],
                    channel="sms",
                    compiled=compiled,
                    variables={},
                    send_at=now - age,
                    now=now - age,
                )
                for age in ages.values()
            ],
        )
        window = await counters.window(s, workspace_id=workspace_id)
        await counters.fold(s)
        assert await counters.window(s, workspace_id=workspace_id) == window
        in_window = (
            await s.execute(
                select(func.count()).where(
                    Message.workspace_id == workspace_id, Message.created_at >= counters.window_start()
                )
            )
        ).scalar_one()
    assert window["total"] == in_window == 3  # 24 h ago is in the 24th whole hour before this one
    assert window["by_channel"]["sms"] == 3 and window["by_status"]["queued"] == 3

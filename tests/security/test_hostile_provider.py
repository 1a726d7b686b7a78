"""A provider (or whatever a tenant points a connection at) cannot stall delivery for the others,
read internal services through error bodies, or be reached on a private address (PostgreSQL)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from server.db import utcnow
from server.messages import claims
from server.messages.claims import INVALID_ID_REASON, Outcome
from server.messages.models import Message, MessageStatus
from server.messages.wake import notify_dispatch
from server.providers.models import Provider
from tests.dispatcher.conftest import DispatcherFactory, World, wait_until
from tests.providers.fakes import FakeTwilio, LocalServer, Seen

POISON_ID = "+15550000001"  # answered 201 with a 5,000-character sid
POISON_NUL = "+15550000002"  # answered 400 with a NUL in the error message
LEAKY = "+15550000003"  # answered 500 with an internal service's HTML page
SECRET = "SECRET-db-password-hunter2"


class HostileTwilio(FakeTwilio):
    """Twilio's API, except for three recipients; counts every request by recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.by_to: Counter[str] = Counter()

    def accept(self, request: Request, seen: Seen) -> Response:
        to = seen.form.get("To", "")
        self.by_to[to] += 1
        if to == POISON_ID:
            return JSONResponse({"sid": "S" * 5000, "status": "queued"}, 201)
        if to == POISON_NUL:
            return JSONResponse({"code": 21211, "message": "bad\x00number\x00"}, 400)
        if to == LEAKY:
            return HTMLResponse(f"<html><body>redis: {SECRET}\n" + "x" * 2000 + "</body></html>", 500)
        return super().accept(request, seen)


@pytest.fixture
def twilio() -> Iterator[tuple[HostileTwilio, str]]:
    fake = HostileTwilio()
    with LocalServer(fake.app) as server:
        yield fake, server.origin


async def _twilio_provider(world: World, base_url: str) -> int:
    async with world.db.transaction() as s:
        p = Provider(
            workspace_id=world.workspace_id,
            name="twilio",
            kind="twilio",
            channel="sms",
            priority=10,
            config={
                "account_sid": FakeTwilio.account_sid,
                "auth_token": FakeTwilio.auth_token,
                "from_number": "+15550009999",
                "base_url": base_url,
            },
            webhook_key=secrets.token_hex(16),
        )
        s.add(p)
        await s.flush()
        return p.id


async def _sms(world: World, numbers: list[str]) -> dict[str, int]:
    now = utcnow()
    rows = [
        {
            "workspace_id": world.workspace_id,
            "channel": "sms",
            "to_address": n,
            "subject": "",
            "body": f"Hello {n}",
            "variables": {},
            "send_at": now,
            "next_attempt_at": now,
            "status": "queued",
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for n in numbers
    ]
    async with world.db.transaction() as s:
        ids = list((await s.execute(insert(Message).returning(Message.id), rows)).scalars())
        await notify_dispatch(s)
    return dict(zip(numbers, ids, strict=True))


async def _settled(world: World, ids: list[int]) -> bool:
    async with world.db.sessions() as s:
        rows = await s.execute(select(Message.status).where(Message.id.in_(ids)))
        return all(st in ("sent", "failed") for st in rows.scalars())


async def test_a_poisoned_provider_answer_settles_its_message_alone_and_the_rest_are_sent_once(
    pg_world: World, make_dispatcher: DispatcherFactory, twilio: tuple[HostileTwilio, str]
) -> None:
    fake, origin = twilio
    await _twilio_provider(pg_world, origin)
    good = [f"+1555100{i:04d}" for i in range(40)]
    ids = await _sms(pg_world, [POISON_ID, *good[:20], POISON_NUL, LEAKY, *good[20:]])
    dispatcher = await make_dispatcher(pg_world, max_attempts=1)

    await wait_until(lambda: _settled(pg_world, list(ids.values())), within=30)
    assert dispatcher.error is None
    assert not dispatcher._tasks["flush"].done()

    poisoned = await pg_world.get(ids[POISON_ID])
    # The provider accepted it: sent (sending again would deliver twice), without the unusable id.
    assert (poisoned.status, poisoned.provider_message_id, poisoned.reason) == (
        "sent",
        None,
        INVALID_ID_REASON,
    )
    nul = await pg_world.get(ids[POISON_NUL])
    assert nul.status == "failed" and nul.reason is not None
    assert "\x00" not in nul.reason and "bad" in nul.reason
    leaky = await pg_world.get(ids[LEAKY])
    assert leaky.status == "failed" and leaky.reason is not None
    assert SECRET not in leaky.reason and "<html" not in leaky.reason
    assert len(leaky.reason) <= 250
    for number in good:
        m = await pg_world.get(ids[number])
        assert m.status == "sent" and m.provider_message_id is not None
    assert set(fake.by_to.values()) == {1}, "a message was sent twice"

    # The worker keeps sending after all that.
    later = await _sms(pg_world, ["+15552000001"])
    await wait_until(lambda: _settled(pg_world, list(later.values())), within=10)
    assert (await pg_world.get(later["+15552000001"])).status == "sent"


async def test_a_batch_whose_statement_fails_is_written_row_by_row(
    pg_world: World, make_dispatcher: DispatcherFactory, twilio: tuple[HostileTwilio, str]
) -> None:
    """Defence in depth: an outcome the database refuses for a reason nobody foresaw (here a
    provider id beyond bigint) fails alone; the batch's other outcomes are written."""
    dispatcher = await make_dispatcher(pg_world)
    await dispatcher.stop()  # only its flush path is used here
    ids = await pg_world.messages(3)
    async with pg_world.db.transaction() as s:
        held = await claims.claim_due(s, limit=3, lease_s=60)
    assert sorted(m.id for m in held) == ids
    outcomes = [
        Outcome(m, MessageStatus.sent, provider_id=2**63 if i == 1 else None, provider_message_id=f"id-{i}")
        for i, m in enumerate(held)
    ]
    await dispatcher._write(outcomes)
    statuses = {m.id: (await pg_world.get(m.id)).status for m in held}
    assert statuses == {held[0].id: "sent", held[1].id: "sending", held[2].id: "sent"}


async def test_a_provider_name_resolving_to_loopback_is_not_connected_to(
    pg_world: World, make_dispatcher: DispatcherFactory, twilio: tuple[HostileTwilio, str]
) -> None:
    fake, origin = twilio
    # Saved while it pointed elsewhere, say; the name now resolves to 127.0.0.1.
    await _twilio_provider(pg_world, origin.replace("127.0.0.1", "localhost"))
    ids = await _sms(pg_world, ["+15553000001"])
    await make_dispatcher(pg_world, allow_private_endpoints=False)
    await wait_until(lambda: _settled(pg_world, list(ids.values())), within=15)
    m = await pg_world.get(ids["+15553000001"])
    assert m.status == "failed" and m.reason is not None and "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS" in m.reason
    assert fake.by_to == Counter()


async def test_a_provider_at_a_private_literal_is_not_connected_to(
    pg_world: World, make_dispatcher: DispatcherFactory, twilio: tuple[HostileTwilio, str]
) -> None:
    fake, origin = twilio
    await _twilio_provider(pg_world, origin)  # stored before the guard existed
    ids = await _sms(pg_world, ["+15553000002"])
    await make_dispatcher(pg_world, allow_private_endpoints=False, public_url="https://sb.example.test")
    await wait_until(lambda: _settled(pg_world, list(ids.values())), within=15)
    m = await pg_world.get(ids["+15553000002"])
    assert m.status == "failed" and m.reason is not None and "SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS" in m.reason
    assert fake.by_to == Counter()

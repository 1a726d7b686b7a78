"""The dispatcher's set-based `finish` writes only the moves the status machine allows."""

from __future__ import annotations

from server.messages import claims
from server.messages.claims import Outcome
from server.messages.models import MessageStatus
from tests.dispatcher.conftest import World


async def test_finish_refuses_an_outcome_the_status_machine_does_not_allow(world: World) -> None:
    [mid] = await world.messages(1)
    async with world.db.transaction() as s:
        [claim] = await claims.claim_due(s, limit=10, lease_s=60)
    async with world.db.transaction() as s:
        # `sending → scheduled` moves backwards: not written, no history row, no event.
        refused = await claims.finish(s, [Outcome(claim, MessageStatus.scheduled)])
    assert refused == []
    assert (await world.get(mid)).status == "sending"
    async with world.db.transaction() as s:
        done = await claims.finish(s, [Outcome(claim, MessageStatus.sent, provider_message_id="p-1")])
    assert [c.status for c in done] == ["sent"]
    assert await world.history(mid) == ["sending", "sent"]

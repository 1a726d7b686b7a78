"""Presence in a conversation (DESIGN §8): "Bob is replying" reaches the inbox."""

from __future__ import annotations

from server.conversations.models import Conversation
from server.db import Database
from tests.realtime.clients import Client
from tests.realtime.conftest import seed

from .test_presence import presence_events, second_user


async def test_replying_in_a_conversation_reaches_the_inbox_and_leaving_clears_it(
    db: Database, start_app
) -> None:  # type: ignore[no-untyped-def]
    s = await seed(db)
    bob = await second_user(db, s.ws)
    async with db.transaction() as session:
        conv = Conversation(workspace_id=s.ws, contact_id=s.contact, channel="sms")
        theirs = Conversation(workspace_id=s.other_ws, contact_id=s.other_contact, channel="sms")
        session.add_all([conv, theirs])
        await session.flush()
        conv_id, their_id = conv.id, theirs.id
    async with start_app() as app:
        ann = await Client.open(app.ws(s.ws, s.user))
        await ann.subscribe(["inbox"], None)
        typing = await Client.open(app.ws(s.ws, bob))
        await typing.send(op="presence", conversation_id=their_id, state="replying")  # not ours: refused
        await typing.send(op="presence", conversation_id=conv_id, state="replying")
        got = await presence_events(ann, 1)
        assert got == [{"conversation_id": conv_id, "user_id": bob, "user_name": "Eve", "state": "replying"}]
        typing.conn.transport.abort()  # the socket drops: the replying state goes with it
        [left] = await presence_events(ann, 1)
        assert left["state"] == "left" and left["conversation_id"] == conv_id
        await ann.close()

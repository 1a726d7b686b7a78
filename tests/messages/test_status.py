"""The one status rule, in its Python and its SQL forms."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3

from server.messages.models import MessageStatus
from server.messages.status import TRANSITIONS, MessageState, Transitions, allowed_sql, moves_forward

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def test_allowed_sql_agrees_with_the_status_machine_for_every_pair() -> None:
    predicate = allowed_sql(":cur", ":new")
    db = sqlite3.connect(":memory:")
    for cur, new in itertools.product(MessageStatus, MessageStatus):
        (allowed,) = db.execute(f"SELECT {predicate}", {"cur": cur.value, "new": new.value}).fetchone()
        assert bool(allowed) == cur.can_move_to(new) == ((cur, new) in TRANSITIONS), (cur, new)
        assert moves_forward(cur, new, retry=True) == cur.can_move_to(new)


def test_transitions_never_move_back_or_out_of_a_terminal_state() -> None:
    m = MessageState(1, "sent", 7, "email", "a@b.test", None, "sandbox", None, None, None, NOW)
    moves = Transitions(workspace_id=1)
    assert not moves.move(m, MessageStatus.queued)  # backwards
    assert moves.move(m, MessageStatus.delivered)
    assert not moves.move(m, MessageStatus.bounced)  # delivered is final
    assert not moves.move(m, "opened")  # an engagement event is not a status
    assert m.status == "delivered" and [e.data["status"] for e in moves.events] == ["delivered"]
    queued = MessageState(2, "sending", 7, "email", "a@b.test", None, None, None, None, None, NOW)
    assert not moves.move(queued, MessageStatus.queued)  # the dispatcher's retry step only


def test_a_bad_exit_sets_the_reason_and_reaching_sent_clears_it() -> None:
    m = MessageState(1, "sending", 7, "email", "a@b.test", None, None, None, None, "stale", NOW)
    moves = Transitions(workspace_id=1)
    assert moves.move(m, MessageStatus.sent)
    assert m.reason is None and m.sent_at is not None
    assert moves.move(m, MessageStatus.bounced, reason="mailbox full")
    assert m.reason == "mailbox full"
    assert [h["status"] for h in moves.history] == ["sent", "bounced"]

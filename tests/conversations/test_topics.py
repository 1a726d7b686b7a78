"""The `inbox` topic, in Python and in SQL."""

from __future__ import annotations

import pytest
from sqlalchemy import column, select, table

from realtime.topics import TopicError, matches, parse_topics, sql_filter, topics_of


def test_conversation_events_go_to_the_inbox_and_their_contact() -> None:
    assert topics_of("conversation.created", 4) == ("inbox", "contact:4")
    assert topics_of("conversation.updated", 4) == ("inbox", "contact:4")
    assert topics_of("conversation.message", 4) == ("inbox", "board", "contact:4")


def test_conversation_presence_goes_to_the_inbox_only() -> None:
    assert topics_of("presence", None) == ("inbox",)
    assert topics_of("presence", 9) == ("contact:9",)
    assert not matches(frozenset({"inbox"}), topics_of("presence", 9))


def test_inbox_is_a_topic_and_typos_are_not() -> None:
    assert parse_topics(["inbox", "board"]) == frozenset({"inbox", "board"})
    with pytest.raises(TopicError):
        parse_topics(["inboxes"])


def test_sql_filter_for_the_inbox() -> None:
    ev = table("event", column("type"), column("contact_id"))
    sql = str(select(ev).where(sql_filter(frozenset({"inbox"}), ev.c.type, ev.c.contact_id)))
    assert "LIKE" in sql and "IS NULL" in sql

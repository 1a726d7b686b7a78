from __future__ import annotations

import pytest
from sqlalchemy import column, select, table

from realtime.topics import TopicError, matches, parse_topic_list, parse_topics, sql_filter, topics_of
from realtime.types import Event, decode_batch, encode_batch
from realtime.wire import ws_close_frame, ws_text_frame


def test_message_events_go_to_board_and_their_contact() -> None:
    assert topics_of("message.status", 7) == ("board", "contact:7")
    assert topics_of("message.created", None) == ("board",)
    assert topics_of("report.updated", None) == ("board",)
    assert topics_of("campaign.progress", None) == ("board",)
    assert topics_of("suppression.created", None) == ("board",)


def test_contact_events_and_import_progress_go_to_contacts() -> None:
    assert topics_of("contact.updated", 3) == ("contacts", "contact:3")
    assert topics_of("import.progress", None) == ("contacts",)


def test_presence_goes_only_to_its_contact() -> None:
    assert topics_of("presence", 9) == ("contact:9",)
    assert not matches(frozenset({"board", "contacts"}), topics_of("presence", 9))


@pytest.mark.parametrize("bad", [["board", "boards"], ["contact:0"], ["contact:x"], [], [7], ["contact:-1"]])
def test_bad_topics_are_refused(bad: list[object]) -> None:
    with pytest.raises(TopicError):
        parse_topics(bad)


def test_topic_list_from_query_string() -> None:
    assert parse_topic_list("board, contact:7,") == frozenset({"board", "contact:7"})


def test_sql_filter_follows_the_same_rule() -> None:
    ev = table("event", column("type"), column("contact_id"))
    sql = str(select(ev).where(sql_filter(frozenset({"board", "contact:4"}), ev.c.type, ev.c.contact_id)))
    assert "LIKE" in sql and "IN" in sql and "contact_id" in sql


def test_batch_round_trip_keeps_the_envelope_bytes() -> None:
    events = [
        Event(3, 10, "message.status", 5, b'{"id":10,"data":{"x":"a\\tb"}}'),
        Event(3, 11, "presence", None, b"{}"),
    ]
    back = list(decode_batch(3, encode_batch(events)))
    assert [(e.id, e.type, e.contact_id, e.payload) for e in back] == [
        (10, "message.status", 5, events[0].payload),
        (11, "presence", None, b"{}"),
    ]


def test_frames_follow_rfc6455_lengths() -> None:
    assert ws_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert ws_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws_text_frame(b"x" * 70000)[:2] == b"\x81\x7f"
    assert ws_close_frame(1008, "slow")[:4] == b"\x88\x06\x03\xf0"

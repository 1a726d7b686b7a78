"""Topics: which events a subscription receives.

`board` gets every `message.*` event, `report.updated`, `campaign.progress`,
`suppression.created`, `board.counters` and `conversation.message` (the board shows inbound messages
too); `contacts` every `contact.*` event, `import.progress`, `bulk.progress` and `consent.changed`; `inbox` every `conversation.*` event
and the presence of agents in conversations (a `presence` event without a contact);
`contact:{id}` every event whose `contact_id` is id (presence included)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_

# `board`, `contacts` or `contact:{id}`.
Topic = str

BOARD = "board"
_BOARD_TYPES = ("report.updated", "campaign.progress", "suppression.created", "board.counters")
CONTACTS = "contacts"
_CONTACTS_TYPES = ("import.progress", "bulk.progress", "consent.changed")
INBOX = "inbox"
GROUPS = (BOARD, CONTACTS, INBOX)
MAX_TOPICS = 100
_CONTACT = re.compile(r"contact:([1-9][0-9]{0,17})")


class TopicError(ValueError):
    pass


def topic_groups(type: str, contact_id: int | None = None) -> tuple[Topic, ...]:
    if type.startswith("message.") or type in _BOARD_TYPES:
        return (BOARD,)
    if type.startswith("contact.") or type in _CONTACTS_TYPES:
        return (CONTACTS,)
    if type == "conversation.message":
        return (INBOX, BOARD)
    if type.startswith("conversation.") or (type == "presence" and contact_id is None):
        return (INBOX,)
    return ()


def topics_of(type: str, contact_id: int | None) -> tuple[Topic, ...]:
    groups = topic_groups(type, contact_id)
    return groups if contact_id is None else (*groups, f"contact:{contact_id}")


def parse_topics(raw: Iterable[Any]) -> frozenset[Topic]:
    """Validated topics; raises TopicError naming the first bad one."""
    out: set[Topic] = set()
    for item in raw:
        if not isinstance(item, str):
            raise TopicError(f"A topic is a string, not {item!r}.")
        t = item.strip()
        if t not in GROUPS and not _CONTACT.fullmatch(t):
            raise TopicError(f"Unknown topic {t!r}: use board, contacts, inbox or contact:<id>.")
        out.add(t)
    if not out:
        raise TopicError("Name at least one topic: board, contacts, inbox or contact:<id>.")
    if len(out) > MAX_TOPICS:
        raise TopicError(f"At most {MAX_TOPICS} topics per subscription.")
    return _shared(frozenset(out))


@lru_cache(maxsize=1024)
def _shared(topics: frozenset[Topic]) -> frozenset[Topic]:
    """One object per distinct topic set in use: thousands of `board` sockets share one."""
    return topics


def parse_topic_list(raw: str | None) -> frozenset[Topic]:
    """From a query string: `board,contact:7`."""
    return parse_topics(p for p in (raw or "").split(",") if p.strip())


def contact_ids(topics: Iterable[Topic]) -> list[int]:
    return sorted(int(t.split(":", 1)[1]) for t in topics if t.startswith("contact:"))


def matches(topics: frozenset[Topic], event_topics: tuple[Topic, ...]) -> bool:
    return not topics.isdisjoint(event_topics)


def sql_filter(topics: frozenset[Topic], type_col: Any, contact_col: Any) -> ColumnElement[bool]:
    """The same rule as `topics_of`, as a WHERE clause over the event log."""
    clauses: list[ColumnElement[bool]] = []
    if BOARD in topics:
        clauses += [type_col.like("message.%"), type_col.in_((*_BOARD_TYPES, "conversation.message"))]
    if CONTACTS in topics:
        clauses += [type_col.like("contact.%"), type_col.in_(_CONTACTS_TYPES)]
    if INBOX in topics:
        clauses += [type_col.like("conversation.%"), and_(type_col == "presence", contact_col.is_(None))]
    ids = contact_ids(topics)
    if ids:
        clauses.append(contact_col.in_(ids))
    return or_(*clauses) if clauses else false()

"""What a caller may subscribe to: shared by the WebSocket, long-poll and SSE endpoints."""

from __future__ import annotations

from typing import Any

from realtime.topics import TopicError, contact_ids, parse_topics
from realtime.types import Database, EventLog, Topic


class Refused(ValueError):
    """A topic or `after` this caller may not see; the message is the client-facing detail."""


class Resync(Exception):
    """`after` is older than the retained log: the client must reload its state."""


def parse_after(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise Refused("after must be an event id (an integer) or null.")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise Refused("after must be an event id (an integer) or null.") from None
    if value < 0:
        raise Refused("after must not be negative.")
    return value


async def check(
    db: Database, eventlog: EventLog, workspace_id: int, raw_topics: Any, after: int | None
) -> frozenset[Topic]:
    """Validated topics; raises Refused or Resync."""
    if isinstance(raw_topics, str) or not isinstance(raw_topics, list | tuple | frozenset | set):
        raise Refused('topics must be a list such as ["board", "contact:7"].')
    try:
        topics = parse_topics(raw_topics)
    except TopicError as exc:
        raise Refused(str(exc)) from None
    async with db.sessions() as session:
        wanted = contact_ids(topics)
        found = await eventlog.contacts_exist(session, workspace_id, wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise Refused(f"No contact {missing[0]} in this workspace (topic contact:{missing[0]}).")
        if after is not None:
            head = (await eventlog.heads(session, [workspace_id])).get(workspace_id, 0)
            if after > head:
                raise Refused(f"after={after} is not an event of this workspace (the last is {head}).")
            if after < head:
                oldest = await eventlog.oldest_retained(session, workspace_id)
                if oldest is None or oldest > after + 1:
                    raise Resync
    return topics

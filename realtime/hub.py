"""Per process: fans events from the backend out to this process's subscribers, gap-free.

The hub follows a workspace from the first time one of its subscribers arrives. For each it
keeps the last id delivered (`Feed.last`) and a small ring of recent events. Ids are contiguous
per workspace, so an id past `last + 1` means something was missed (a publish during a Redis
reconnect, a relay hand-over): the hub reads the missing ids from the event log first. A
backend reset backfills every feed; a slow sweep compares with the log's head to catch a lost
last event. Delivery never waits on a subscriber.

The hub is the process's one listener: other parts of the process (the row caches) follow every
published batch and every note through `observe()` and `on_note()`, not a subscription of
their own. An observer gets `(workspace_id, events)` for each batch, of every workspace, and
`(0, None)` after a reset (something may have been missed)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from realtime.backend import RESET, Backend, Note
from realtime.lifecycle import Supervisor
from realtime.subscriber import Subscriber
from realtime.topics import matches
from realtime.types import Event, EventLog, Readable, Topic, decode_batch

log = logging.getLogger("switchboard.realtime")

# Recent events kept per workspace: most replays and long-polls never touch the log. A watcher
# cut off as too slow comes back a second or two behind; during a campaign (~4 events a message,
# thousands a second) that is thousands of events. ~0.8 KB an event (payload and frame): ~6.5 MB for
# a busy workspace's full ring; a quiet one holds what it had, and a feed nobody follows is dropped.
RING = 8192
SWEEP_S = 2.0  # how often the log's head is compared with what was delivered
PAGE = 500
# Subscribers' replays reading the log at once, per process. A crowd cut off together (a burst
# they could not read) comes back together; without a bound their replays would take every pooled
# connection and the pages of the dashboard would wait for one. The rest wait their turn here.
LOG_READERS = 4
IDLE_SWEEPS = 30  # a feed without subscribers is dropped after this many sweeps (one minute)

BatchObserver = Callable[[int, list[Event] | None], None]
NoteHandler = Callable[[bytes], None]


class Feed:
    """One workspace as seen by this process."""

    __slots__ = (
        "by_topic",
        "early",
        "idle_sweeps",
        "last",
        "lock",
        "ready",
        "ring",
        "seen_head",
        "workspace_id",
    )

    def __init__(self, workspace_id: int) -> None:
        self.workspace_id = workspace_id
        self.last: int | None = None  # None until read from the log
        self.early: list[Event] = []  # arrived before `last` was known
        self.ring: deque[Event] = deque(maxlen=RING)
        self.by_topic: dict[Topic, set[Subscriber]] = {}
        self.lock = asyncio.Lock()  # one ingest at a time
        self.ready: asyncio.Future[None] | None = None
        self.seen_head = 0
        self.idle_sweeps = 0

    def add(self, sub: Subscriber) -> None:
        for t in sub.topics:
            self.by_topic.setdefault(t, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        for t in sub.topics:
            subs = self.by_topic.get(t)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.by_topic[t]

    def targets(self, topics: tuple[Topic, ...]) -> Iterable[Subscriber]:
        get = self.by_topic.get
        if len(topics) == 1:
            return get(topics[0], ())
        found = [s for s in (get(t) for t in topics) if s]
        if len(found) < 2:
            return found[0] if found else ()
        return set().union(*found)

    def recent(self, after: int, upto: int) -> list[Event] | None:
        """Events in (after, upto] from the ring, or None if it does not reach back that far."""
        ring = self.ring
        if not ring or ring[0].id > after + 1:
            return None
        start = max(0, after + 1 - ring[0].id)
        out: list[Event] = []
        for i in range(start, len(ring)):
            e = ring[i]
            if e.id > upto:
                break
            out.append(e)
        return out


class Hub:
    def __init__(self, db: Readable, backend: Backend, *, log: EventLog, sweep_s: float = SWEEP_S) -> None:
        self.db = db
        self.log = log
        self.backend = backend
        self.sweep_s = sweep_s
        self.feeds: dict[int, Feed] = {}
        self.delivered = 0
        self.backfilled = 0
        self.observers: list[BatchObserver] = []
        self.note_handlers: dict[str, NoteHandler] = {}
        self.supervisor = Supervisor("hub")
        self.log_readers = asyncio.Semaphore(LOG_READERS)

    def observe(self, observer: BatchObserver) -> None:
        """Also hand every published batch (and each reset, as None) to `observer`."""
        self.observers.append(observer)

    def on_note(self, kind: str, handler: NoteHandler) -> None:
        """Hand every note of `kind` (see `Backend.note`) to `handler`."""
        self.note_handlers[kind] = handler

    async def start(self) -> None:
        self.supervisor.spawn("hub-listen", self._listen)
        self.supervisor.spawn("hub-sweep", self._sweep)

    async def stop(self) -> None:
        await self.supervisor.stop()

    # -- subscribers -------------------------------------------------------------------------

    async def head(self, workspace_id: int) -> int:
        """The last id this process has delivered for the workspace."""
        feed = await self._feed(workspace_id)
        assert feed.last is not None
        return feed.last

    async def subscribe(
        self, sub: Subscriber, after: int | None, *, on_attached: Callable[[], None] | None = None
    ) -> None:
        """Attach `sub`, replay what it missed after `after` (None: nothing), then go live.
        Events delivered while the replay runs wait in `sub.pending`: no gap, no duplicate.
        `on_attached` runs once live events are being captured, before the replay."""
        feed = await self._feed(sub.workspace_id)
        head = feed.last
        assert head is not None
        sub.live = False
        sub.floor = head if after is None else max(after, head)
        feed.add(sub)
        try:
            if on_attached is not None:
                on_attached()
            if after is not None and after < head:
                await self._replay(sub, feed, after, head)
        except BaseException:
            feed.remove(sub)
            raise
        sub.go_live()

    def unsubscribe(self, sub: Subscriber) -> None:
        feed = self.feeds.get(sub.workspace_id)
        if feed is not None:
            feed.remove(sub)

    async def _replay(self, sub: Subscriber, feed: Feed, after: int, upto: int) -> None:
        recent = feed.recent(after, upto)
        if recent is not None:
            await sub.replay([e for e in recent if matches(sub.topics, e.topics)])
            return
        cursor = after
        while sub.wants_more and cursor < upto:
            async with self.log_readers, self.db.sessions() as session:
                page = await self.log.read_events(
                    session, feed.workspace_id, cursor, upto=upto, topics=sub.topics, limit=PAGE
                )
            if not page:
                return
            await sub.replay(page)
            cursor = page[-1].id

    # -- ingest --------------------------------------------------------------------------------

    async def _feed(self, workspace_id: int) -> Feed:
        feed = self.feeds.get(workspace_id)
        if feed is None:
            feed = self.feeds[workspace_id] = Feed(workspace_id)
            feed.ready = asyncio.ensure_future(self._init(feed))
        assert feed.ready is not None
        try:
            await asyncio.shield(feed.ready)
        except Exception:
            if self.feeds.get(workspace_id) is feed:
                del self.feeds[workspace_id]
            raise
        return feed

    async def _init(self, feed: Feed) -> None:
        async with self.db.sessions() as session:
            head = (await self.log.heads(session, [feed.workspace_id])).get(feed.workspace_id, 0)
        async with feed.lock:
            feed.last = feed.seen_head = head
            early, feed.early = feed.early, []
            await self._ingest(feed, early)

    def _observe(self, workspace_id: int, events: list[Event] | None) -> None:
        for observer in self.observers:
            try:
                observer(workspace_id, events)
            except Exception:
                log.exception("a batch observer failed")

    def _note(self, note: Note) -> None:
        handler = self.note_handlers.get(note.kind)
        if handler is None:
            return
        try:
            handler(note.data)
        except Exception:
            log.exception("handling a %r note failed", note.kind)

    async def _listen(self) -> None:
        async for item in self.backend.listen():
            if isinstance(item, Note):
                self._note(item)
                continue
            if item is RESET:
                self._observe(0, None)
                await self._repair(list(self.feeds.values()))
                continue
            workspace_id, data = item  # type: ignore[misc]
            feed = self.feeds.get(workspace_id)
            if feed is None and not self.observers:
                continue  # no subscriber here has ever asked for this workspace
            try:
                events = list(decode_batch(workspace_id, data))
                self._observe(workspace_id, events)
                if feed is None:
                    continue
                if feed.last is None:
                    feed.early.extend(events)
                    continue
                async with feed.lock:
                    await self._ingest(feed, events)
            except Exception:
                # The feed stays behind; the next event or the sweep backfills it.
                log.exception("delivering events of workspace %s failed", workspace_id)

    async def _ingest(self, feed: Feed, events: list[Event]) -> None:
        """Deliver `events` (in id order) after whatever is missing before them."""
        run: list[Event] = []
        for ev in events:
            last = feed.last
            assert last is not None
            if ev.id <= last:
                continue  # seen already (duplicate publish, or backfilled)
            if ev.id != last + 1:
                self._deliver(feed, run)
                run = []
                await self._backfill(feed, ev.id - 1)
                if ev.id <= feed.last:  # type: ignore[operator]
                    continue
            run.append(ev)
            feed.last = ev.id
        self._deliver(feed, run)

    async def _backfill(self, feed: Feed, upto: int) -> None:
        while feed.last is not None and feed.last < upto:
            async with self.db.sessions() as session:
                page = await self.log.read_events(
                    session, feed.workspace_id, feed.last, upto=upto, limit=PAGE
                )
            if not page:
                log.warning(
                    "events %s..%s of workspace %s are not in the log", feed.last + 1, upto, feed.workspace_id
                )
                feed.last = upto
                return
            self.backfilled += len(page)
            feed.last = page[-1].id
            self._deliver(feed, page)

    def _deliver(self, feed: Feed, events: list[Event]) -> None:
        if not events:
            return
        feed.ring.extend(events)
        if not feed.by_topic:
            return
        if len(events) == 1:
            ev = events[0]
            for sub in feed.targets(ev.topics):
                sub.push(events)
                self.delivered += 1
            return
        # A batch: one write per subscriber for all its events.
        per: dict[Subscriber, list[Event]] = {}
        for ev in events:
            for sub in feed.targets(ev.topics):
                got = per.get(sub)
                if got is None:
                    per[sub] = [ev]
                else:
                    got.append(ev)
        for sub, evs in per.items():
            sub.push(evs)
            self.delivered += len(evs)

    async def _repair(self, feeds: list[Feed]) -> None:
        """Backfill feeds up to the log's head (after a reset, or when the sweep found them behind)."""
        ready = [f for f in feeds if f.last is not None]
        if not ready:
            return
        try:
            async with self.db.sessions() as session:
                heads = await self.log.heads(session, [f.workspace_id for f in ready])
            for feed in ready:
                head = heads.get(feed.workspace_id, 0)
                if head > (feed.last or 0):
                    async with feed.lock:
                        await self._backfill(feed, head)
        except Exception:
            log.exception("backfilling from the event log failed")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            feeds = [f for f in self.feeds.values() if f.last is not None]
            if not feeds:
                continue
            try:
                async with self.db.sessions() as session:
                    heads = await self.log.heads(session, [f.workspace_id for f in feeds])
            except Exception:
                log.exception("reading the event log's heads failed")
                continue
            for feed in feeds:
                # Forget a workspace nobody here has followed for a while (its ring is memory).
                feed.idle_sweeps = 0 if feed.by_topic else feed.idle_sweeps + 1
                if feed.idle_sweeps > IDLE_SWEEPS and not feed.lock.locked():
                    del self.feeds[feed.workspace_id]
                    continue
                # Behind the head seen one sweep ago: the relay had its chance, read the log.
                if feed.last is not None and feed.last < feed.seen_head:
                    try:
                        async with feed.lock:
                            await self._backfill(feed, feed.seen_head)
                    except Exception:
                        log.exception("backfilling workspace %s failed", feed.workspace_id)
                feed.seen_head = heads.get(feed.workspace_id, 0)

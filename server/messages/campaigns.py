"""Campaigns: one message per contact of an audience, created in batches.

Each batch is its own transaction (never one huge one): it locks the campaign row, creates the
messages for the next contacts after the cursor `last_contact_id`, moves the cursor and emits a
`campaign.progress` event. A batch is set-based: one keyset read of the audience's columns (the
search predicate of `server.contacts.search`), a tight render loop under the template budget that
renders once per distinct value of the fields the template reads (a template that reads none
renders once per batch), and multi-row inserts of the messages, their history, counters and
events. While a batch is written, the next one is read and rendered in its own read-only
transaction (`expand_campaign`), so the database and this process work at once; the batch's own
transaction uses it only if the cursor has not moved meanwhile. A batch reads the recipients' JSON
columns only when the template names them. An expansion interrupted by a crash or a restart
resumes from the cursor (`CampaignRunner.sweep`, in every process), and two expanders of the same
campaign take turns on the row lock instead of creating a contact's message twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from realtime.lifecycle import Supervisor
from server.consent import localtime
from server.consent.tokens import Links
from server.contacts import service as contacts
from server.contacts.models import Contact
from server.db import Database, utcnow
from server.errors import NotFound
from server.events.service import emit, emit_many
from server.messages import service
from server.messages.models import Campaign, Message, MessageStatus
from server.messages.status import STATE_COLUMNS, MessageState, Transitions
from server.messages.wake import wake_local
from server.templates import render, whatsapp
from server.templates import service as templates
from server.workspaces import settings as workspace_settings

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger("switchboard.campaigns")

BATCH_SIZE = 10_000  # messages per transaction: ~0.5 s of work, a progress event the board can show
YIELD_AFTER = 0.02  # seconds of rendering before a batch lets other tasks run
# A live expander commits a batch in well under a second; a campaign whose `created` has not
# moved for this long has lost its process, and this one takes it up.
SWEEP_S = 30.0


# The names a template reads from the contact (`render.context_for`): the render cache's key.
_CONTEXT_NAMES = frozenset((*render.CONTACT_FIELDS, "contact"))


class CampaignNotFound(NotFound):
    what = "campaign"


class CampaignNotCancelable(Exception):
    """Only a campaign expanding or expanded can be canceled (a failed one has nothing to stop)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


CANCEL_BATCH = 5_000  # messages canceled per transaction


def as_dict(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "template_id": c.template_id,
        "audience": c.audience,
        "category": c.category,
        "send_at": c.send_at,
        "local_time": c.local_time,
        "status": c.status,
        "total": c.total,
        "created": c.created,
        "created_at": c.created_at,
    }


_AUDIENCE_COLUMNS = (Contact.id, Contact.name, Contact.email, Contact.phone)
_JSON_COLUMNS = (Contact.attributes, Contact.tags)


def _audience_columns(names: set[str], *, local_time: bool) -> tuple[Any, ...]:
    """What a batch reads of each recipient: the JSON columns only when the template reads them
    (or `local_time` needs the attributes' time zone); otherwise NULL under their names, as
    decoding them was a tenth of a large campaign's CPU."""
    wanted = (
        {"attributes", "tags"} if "contact" in names else names | ({"attributes"} if local_time else set())
    )
    return (
        *_AUDIENCE_COLUMNS,
        *(col if col.key in wanted else null().label(col.key) for col in _JSON_COLUMNS),
    )


def _audience_query(dialect: str, c: Campaign, columns: tuple[Any, ...] = (Contact,)) -> Any:
    return contacts.list_query(
        dialect,
        workspace_id=c.workspace_id,
        q=c.audience.get("q"),
        tag=c.audience.get("tag"),
        before_id=None,
        columns=columns,
    ).order_by(None)


async def _progress(session: AsyncSession, c: Campaign) -> None:
    await emit(
        session,
        c.workspace_id,
        "campaign.progress",
        {"campaign_id": c.id, "created": c.created, "total": c.total, "status": c.status},
    )


async def create_campaign(
    session: AsyncSession, *, workspace_id: int, user_id: int | None, data: dict[str, Any]
) -> Campaign:
    """The campaign row, with its audience counted; its messages come from `expand_campaign`.
    `service.InvalidReference` when the template is not in this workspace."""
    try:
        await templates.get_template(session, workspace_id=workspace_id, template_id=data["template_id"])
    except templates.TemplateNotFound:
        raise service.InvalidReference("template_id", "no such template") from None
    audience = {k: v for k, v in data["audience"].items() if v is not None}
    c = Campaign(
        workspace_id=workspace_id,
        name=data["name"],
        template_id=data["template_id"],
        audience=audience,
        category=data.get("category") or "marketing",
        send_at=data.get("send_at"),
        local_time=data.get("local_time"),
        status="expanding",
        created=0,
        last_contact_id=0,
        created_by=user_id,
        created_at=utcnow(),
    )
    query = _audience_query(session.get_bind().dialect.name, c)
    c.total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    session.add(c)
    await session.flush()
    await _progress(session, c)
    return c


async def get_campaign(session: AsyncSession, *, workspace_id: int, campaign_id: int) -> Campaign:
    c = (
        await session.execute(
            select(Campaign).where(Campaign.id == campaign_id, Campaign.workspace_id == workspace_id)
        )
    ).scalar_one_or_none()
    if c is None:
        raise CampaignNotFound(campaign_id)
    return c


async def list_campaigns(
    session: AsyncSession, *, workspace_id: int, before_id: int | None, limit: int
) -> list[Campaign]:
    stmt = select(Campaign).where(Campaign.workspace_id == workspace_id)
    if before_id is not None:
        stmt = stmt.where(Campaign.id < before_id)
    return list((await session.execute(stmt.order_by(Campaign.id.desc()).limit(limit))).scalars())


async def _local_send_times(
    session: AsyncSession, c: Campaign, people: Sequence[Any], now: dt.datetime
) -> list[dt.datetime]:
    """Each contact's send time for a campaign at `local_time` on the contact's clock (computed
    once per zone; see server/consent/localtime.py for how the zone is chosen)."""
    assert c.local_time is not None
    ws = await workspace_settings.get(session, c.workspace_id)
    return localtime.send_times(
        ((p.attributes, p.phone) for p in people),
        at=localtime.clock(c.local_time),
        day=c.send_at.date() if c.send_at is not None else None,
        now=now,
        default_zone=ws.timezone,
    )


@dataclass(frozen=True, slots=True)
class BatchResult:
    created: int
    queued: bool  # some message is due now: wake the dispatcher
    finished: bool


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch read and rendered, not yet written: valid while the cursor is still `after`."""

    after: int
    people: list[Any]
    values: list[dict[str, Any]]
    invalid: str | None = None  # the template is gone or invalid: the campaign fails


async def _prepare(
    s: AsyncSession, c: Campaign, *, after: int, batch_size: int, links: Links | None
) -> _Prepared:
    """Read the audience's next contacts after `after` and render their messages (reads only, so
    it may run beside the previous batch's write)."""
    try:
        tpl = await templates.get_template(s, workspace_id=c.workspace_id, template_id=c.template_id)
        compiled = render.compile_message(tpl.subject, tpl.body)
        approved = whatsapp.compile_approved(tpl.whatsapp) if tpl.channel == "whatsapp" else None
    except (templates.TemplateNotFound, render.TemplateInvalid) as exc:
        return _Prepared(after, [], [], invalid=str(exc))
    names = render.names_used(tpl.subject, tpl.body, *whatsapp.sources(tpl.whatsapp))
    used = sorted(names & _CONTEXT_NAMES)
    rows = await s.execute(
        _audience_query(
            s.get_bind().dialect.name, c, _audience_columns(names, local_time=c.local_time is not None)
        )
        .where(Contact.id > after)
        .order_by(Contact.id)
        .limit(batch_size)
    )
    people = list(rows.all())
    now = utcnow()
    send_at = max(c.send_at or now, now)
    local = await _local_send_times(s, c, people, now) if c.local_time else None
    per_contact_link = links is not None and "unsubscribe_url" in names
    # rendered (subject, body, WhatsApp approved template), or why not
    texts: dict[bytes, tuple[str, str, dict[str, Any] | None] | str] = {}
    values = []
    turn = time.monotonic()
    for i, p in enumerate(people):
        to, reason = service.address_for(tpl.channel, p)
        subject = body = ""
        sent_as = None
        if reason is None:
            context = render.context_for(p, {})
            link = links.url(c.workspace_id, p.id, tpl.channel) if per_contact_link and links else ""
            context["unsubscribe_url"] = link
            # One render per distinct value of what the template reads (its link is per contact).
            key = orjson.dumps([link, *(context[n] for n in used)], option=orjson.OPT_SORT_KEYS)
            text_ = texts.get(key)
            if text_ is None:
                try:
                    text_ = texts[key] = (
                        *compiled.render(context),
                        approved.render(context) if approved is not None else None,
                    )
                except render.RenderError as exc:
                    text_ = texts[key] = exc.reason
            if isinstance(text_, str):
                reason = text_
            else:
                subject, body, sent_as = text_
        values.append(
            service.message_values(
                workspace_id=c.workspace_id,
                contact=p,
                channel=tpl.channel,
                rendered=(to, subject, body, reason, sent_as),
                variables={},
                send_at=local[i] if local is not None else send_at,
                now=now,
                template_id=tpl.id,
                campaign_id=c.id,
                created_by=c.created_by,
                category=c.category,
            )
        )
        # Each render is bounded by the template budget; a batch of heavy ones still takes
        # turns with the rest of the event loop (and with the previous batch's write).
        if time.monotonic() - turn > YIELD_AFTER:
            await asyncio.sleep(0)
            turn = time.monotonic()
    return _Prepared(after, people, values)


async def expand_batch(
    db: Database,
    campaign_id: int,
    *,
    batch_size: int = BATCH_SIZE,
    links: Links | None = None,
    prepared: _Prepared | None = None,
    ready: Callable[[int], object] | None = None,
) -> BatchResult:
    """Create the next batch of a campaign's messages in one transaction (`links`: the
    recipients' `{{ unsubscribe_url }}`). `prepared`: this batch read and rendered ahead, used if
    the cursor has not moved since (another expander's batch came first: read again). `ready` is
    told the batch's last contact id before its write, so the next batch can be prepared meanwhile."""
    async with db.transaction() as s:
        c = (
            await s.execute(select(Campaign).where(Campaign.id == campaign_id).with_for_update())
        ).scalar_one_or_none()
        if c is None or c.status != "expanding":
            return BatchResult(0, False, True)
        if prepared is None or prepared.after != c.last_contact_id:
            prepared = await _prepare(s, c, after=c.last_contact_id, batch_size=batch_size, links=links)
        if prepared.invalid is not None:
            log.warning("campaign %s stopped: its template is gone or invalid (%s)", c.id, prepared.invalid)
            c.status = "failed"
            await _progress(s, c)
            return BatchResult(0, False, True)
        people, values = prepared.people, prepared.values
        finished = len(people) < batch_size
        if ready is not None and not finished:
            ready(people[-1].id)
        await service.insert_created(s, c.workspace_id, values)
        if people:
            c.last_contact_id = people[-1].id
            c.created += len(people)
        if finished:
            c.status = "done"
            c.total = c.created  # the audience may have changed since it was counted
        await _progress(s, c)
    queued = any(v["status"] == MessageStatus.queued for v in values)
    return BatchResult(len(values), queued, finished)


async def _prepare_ahead(
    db: Database, campaign_id: int, after: int, *, batch_size: int, links: Links
) -> _Prepared | None:
    """The batch after `after`, read and rendered in its own read-only transaction (no lock: the
    batch's own transaction checks the cursor before using it)."""
    async with db.transaction() as s:
        c = await s.get(Campaign, campaign_id)
        if c is None or c.status != "expanding":
            return None
        return await _prepare(s, c, after=after, batch_size=batch_size, links=links)


async def expand_campaign(services: Services, campaign_id: int, *, batch_size: int = BATCH_SIZE) -> int:
    """Create all remaining messages of a campaign; returns how many this call created. Each
    batch's successor is read and rendered while the batch is written: the database and this
    process work at once."""
    total = 0
    links = Links(services.settings)
    ahead: asyncio.Task[_Prepared | None] | None = None

    def ready(last_contact_id: int) -> None:
        nonlocal ahead
        ahead = asyncio.create_task(
            _prepare_ahead(services.db, campaign_id, last_contact_id, batch_size=batch_size, links=links),
            name=f"campaign-{campaign_id}-ahead",
        )

    try:
        while True:
            prepared, ahead = (await ahead if ahead is not None else None), None
            result = await expand_batch(
                services.db, campaign_id, batch_size=batch_size, links=links, prepared=prepared, ready=ready
            )
            total += result.created
            if result.queued:
                wake_local(services)
            if result.finished:
                return total
    finally:
        if ahead is not None:  # the batch failed or was cancelled while its successor was prepared
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def expand_pending_campaigns(services: Services, *, batch_size: int = BATCH_SIZE) -> int:
    """Finish every campaign still expanding (after a crash, or started by a web process that
    went away); returns the number of messages created. Safe to run beside other expanders."""
    async with services.db.transaction() as s:
        ids = list((await s.execute(select(Campaign.id).where(Campaign.status == "expanding"))).scalars())
    total = 0
    for campaign_id in ids:
        total += await expand_campaign(services, campaign_id, batch_size=batch_size)
    return total


async def cancel_campaign(session: AsyncSession, *, workspace_id: int, campaign_id: int) -> Campaign:
    """Mark a campaign canceled (again: no change). Taken under the row lock an expander holds for
    each batch, so the batch in flight commits first and no batch follows; the messages it made that
    still wait are canceled by `cancel_waiting`. `CampaignNotCancelable` for a failed campaign."""
    c = (
        await session.execute(
            select(Campaign)
            .where(Campaign.id == campaign_id, Campaign.workspace_id == workspace_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if c is None:
        raise CampaignNotFound(campaign_id)
    if c.status == "failed":
        raise CampaignNotCancelable(c.status)
    if c.status != "canceled":
        c.status = "canceled"
        await _progress(session, c)
    return c


async def cancel_batch(db: Database, campaign_id: int, *, batch_size: int = CANCEL_BATCH) -> int:
    """Cancel the next messages of a canceled campaign that are still scheduled or queued (one
    transaction, one `message.status` event each); returns how many. A message a worker has
    claimed meanwhile is past canceling and goes out."""
    async with db.transaction() as s:
        c = (await s.execute(select(Campaign).where(Campaign.id == campaign_id))).scalar_one_or_none()
        if c is None or c.status != "canceled":
            return 0
        rows = (
            await s.execute(
                select(*STATE_COLUMNS)
                .where(Message.campaign_id == campaign_id, Message.status.in_(list(service.CANCELABLE)))
                .order_by(Message.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            )
        ).all()
        moves = Transitions(c.workspace_id)
        for row in rows:
            moves.move(MessageState(*row), MessageStatus.canceled, reason="campaign canceled")
        await emit_many(s, c.workspace_id, await moves.write(s))
    return len(rows)


async def cancel_waiting(db: Database, campaign_id: int, *, batch_size: int = CANCEL_BATCH) -> int:
    """Cancel every message of a canceled campaign still waiting; returns how many."""
    total = 0
    while n := await cancel_batch(db, campaign_id, batch_size=batch_size):
        total += n
    return total


class CampaignRunner:
    """Campaign expansions running in the background of this process (`services.campaigns`, a
    component: shutdown cancels them before the database goes away; the cursor keeps their
    progress). Its sweep resumes expansions whose process went away (killed, or stopped): at
    start-up every campaign still expanding, later each one whose `created` did not move between
    two looks. An expander still alive elsewhere is not harmed: the two take turns on the row lock."""

    def __init__(self, services: Services, *, batch_size: int = BATCH_SIZE, sweep_s: float = SWEEP_S) -> None:
        self.services = services
        self.batch_size = batch_size
        self.sweep_s = sweep_s
        self.tasks: dict[int, asyncio.Task[int]] = {}  # campaign id → its expansion here
        self.supervisor = Supervisor("campaigns")
        self._looked: dict[int, int] | None = None  # campaign id → `created` at the last look

    def start_expansion(self, campaign_id: int) -> asyncio.Task[int]:
        """Expand a campaign in the background; a failure is logged, never lost silently."""
        return self._start(
            campaign_id, expand_campaign(self.services, campaign_id, batch_size=self.batch_size)
        )

    async def wait(self) -> None:
        """Until this process's campaign work (expansions, cancellations) has ended (tests)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks.values()), return_exceptions=True)

    def start_cancel(self, campaign_id: int) -> asyncio.Task[int]:
        """Cancel a canceled campaign's waiting messages in the background (after its expansion
        here, if one runs: that one stops at its next batch)."""
        running = self.tasks.get(campaign_id)

        async def cancel() -> int:
            if running is not None:
                await asyncio.gather(running, return_exceptions=True)
            return await cancel_waiting(self.services.db, campaign_id)

        return self._start(campaign_id, cancel())

    def _start(self, campaign_id: int, work: Coroutine[Any, Any, int]) -> asyncio.Task[int]:
        task = asyncio.create_task(work, name=f"campaign-{campaign_id}")
        self.tasks[campaign_id] = task

        def _done(t: asyncio.Task[int]) -> None:
            if self.tasks.get(campaign_id) is t:
                del self.tasks[campaign_id]
            if not t.cancelled() and t.exception() is not None:
                log.error("campaign %s: its background work failed", campaign_id, exc_info=t.exception())

        task.add_done_callback(_done)
        return task

    async def sweep(self) -> list[int]:
        """Resume the expansions, and the cancellations, that lost their process; returns the
        campaigns taken up."""
        async with self.services.db.transaction() as s:
            rows = (
                await s.execute(select(Campaign.id, Campaign.created).where(Campaign.status == "expanding"))
            ).all()
            waiting = (
                await s.execute(
                    select(Campaign.id).where(
                        Campaign.status == "canceled",
                        select(Message.id)
                        .where(
                            Message.campaign_id == Campaign.id,
                            Message.status.in_(list(service.CANCELABLE)),
                        )
                        .exists(),
                    )
                )
            ).scalars()
            canceled = [cid for cid in waiting if cid not in self.tasks]
        for cid in canceled:
            log.info("finishing the cancellation of campaign %s", cid)
            self.start_cancel(cid)
        looked, self._looked = self._looked, {cid: created for cid, created in rows}
        resumed = [
            cid
            for cid, created in rows
            if cid not in self.tasks and (looked is None or looked.get(cid) == created)
        ]
        for cid in resumed:
            log.info("resuming the expansion of campaign %s", cid)
            self.start_expansion(cid)
        return resumed + canceled

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            await self.sweep()

    async def start(self) -> None:
        try:
            await self.sweep()  # before any request can start an expansion of its own
        except Exception:
            log.exception("looking for unfinished campaign expansions failed (the sweep retries)")
        self.supervisor.spawn("campaign-sweep", self._sweep_forever)

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    async def stop(self) -> None:
        await self.supervisor.stop()
        for t in list(self.tasks.values()):
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

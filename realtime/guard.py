"""What keeps a live connection honest: its caller's access is asked again while it stays open,
and its ops are budgeted.

- **Access.** A socket, an SSE stream or a waiting long-poll was authenticated once, by an access
  token that outlives a logout, a revoked sign-in or a deactivated user by up to its lifetime.
  Each is asked again every `ws_access_recheck_s`, and no later than the token's expiry; when
  access is gone a socket is closed with 4401 (the browser renews its session and resumes with
  `after`), a stream ends with an `error` event and a long-poll answers 401. One sweep serves
  every socket, stream and waiting long-poll of the process (`Live`; a timer per connection would
  cost memory on every idle one); a failing check (the database is down) keeps the connection and
  asks again next sweep.
- **Revocation.** The sweep is the fallback; a revocation does not wait for it. The server calls
  `Realtime.access_ended(...)` after committing one (a key revoked, a sign-in or all of a user's
  sign-ins ended, a user deactivated); that sends an `access` note on the hub's one subscription
  to every process (this one included). Each process marks its connections whose `marks` (the
  identities behind them, taken from the caller at accept: `key:7`, `user:3`, `session:<family>`)
  meet the note's as due now and wakes the sweep, which asks the database and closes exactly those
  whose access is gone, through the same close path. A note is a hint, never the authority: a
  lost one costs at most one interval, a needless one costs one check.
- **Admission.** Opening a socket, a stream or a long-poll asks the same questions (is the user
  active, does the sign-in or key stand), and a reconnecting crowd asks them thousands of times a
  second for the same few callers. `Admissions` remembers a "yes" per process for at most
  `ADMIT_TTL_S` (never longer than the re-check interval) and asks once for callers arriving
  together. The `access` note forgets every answer standing on an identity it names (the revoking
  process forgets before it sends it), a "no" from the sweep forgets the caller's identities,
  an answer that was being asked while a note arrived is asked again, and the hub's subscription
  being made again (notes may have been missed) forgets everything. The sweep never uses it. A
  connection that joins the sweep after a note arrived during its admission is checked at once
  (`joined`): a note racing an admission cannot leave a connection open for an interval.
- **Ops.** A socket has a small local token bucket for every op and one for replays (a
  `subscribe` whose `after` is behind the head reads the log); `presence` and `subscribe`
  also spend the caller's budget across sockets (`OpBudget`, the server's rate-limit engine).
  An op over budget is answered with an error frame; `PATIENCE` such refusals in a row close
  the socket with 1008."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import orjson
from cachetools import TTLCache

from realtime.types import Caller

if TYPE_CHECKING:
    from realtime.service import Realtime

log = logging.getLogger("switchboard.realtime")

SIGNED_OUT_CODE = 4401  # application close code (RFC 6455 §7.4.2: 4000-4999 are ours): renew and resume
SIGNED_OUT = "signed out: renew the session and resume with after"
POLICY_CODE = 1008
BUSY_CODE = 1013  # RFC 6455 "Try Again Later": the database could not answer an op in time
TOO_BIG_CODE = 1009
SWEEP_STEP_S = 1.0  # how often the sweep looks for connections due a check
PATIENCE = 3  # ops refused in a row answered with an error frame; the next one closes the socket
ACCESS_NOTE = "access"  # the kind of backend note that says "these identities lost access"
ADMIT_TTL_S = 5.0  # how long a "yes" at admission is believed without asking again
ADMIT_SIZE = 50_000  # callers remembered at once (each entry is a few hundred bytes)


def marks(
    *, api_key_id: int | None = None, user_id: int | None = None, session_ids: Iterable[str] = ()
) -> frozenset[str]:
    """The identities a revocation names (or a connection stands on), as plain strings."""
    out = {f"session:{s}" for s in session_ids}
    if api_key_id is not None:
        out.add(f"key:{api_key_id}")
    if user_id is not None:
        out.add(f"user:{user_id}")
    return frozenset(out)


def marks_of(caller: Caller) -> frozenset[str]:
    """What a connection stands on: its API key, or its user and sign-in (refresh family)."""
    key_id = getattr(caller, "api_key_id", None)
    if key_id is not None:
        return marks(api_key_id=key_id)
    session_id = getattr(caller, "session_id", None)
    return marks(user_id=caller.user_id, session_ids=(session_id,) if session_id else ())


def _retrieved(task: asyncio.Task[bool]) -> None:
    if not task.cancelled():
        task.exception()  # those who asked saw it; nobody else needs the "never retrieved" warning


class Admissions:
    """Positive access answers at admission (see the module's docstring), per process."""

    def __init__(self, ttl_s: float, size: int = ADMIT_SIZE) -> None:
        self._yes: TTLCache[object, frozenset[str]] = TTLCache(maxsize=size, ttl=ttl_s)
        self._asking: dict[object, asyncio.Task[bool]] = {}
        self._generation = 0  # bumped by every forgetting: an answer asked across it is stale

    async def ask(self, key: object, marks: frozenset[str], load: Callable[[], Awaitable[bool]]) -> bool:
        """The remembered "yes" for `key`, or `await load()`, shared with callers asking at the
        same time (in a task of its own: one of them going away cancels nobody else's answer).
        `marks`: the identities the answer stands on (what a note names to forget it)."""
        if key in self._yes:
            return True
        task = self._asking.get(key)
        if task is None:
            task = asyncio.create_task(self._load(key, marks, load), name="admission")
            task.add_done_callback(_retrieved)
            self._asking[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: object, marks: frozenset[str], load: Callable[[], Awaitable[bool]]) -> bool:
        try:
            for _ in range(2):
                generation = self._generation
                ok = await load()
                if generation == self._generation:
                    if ok:
                        self._yes[key] = marks
                    break
                # Access ended for someone while asking: ask again (a note follows its commit).
            return ok
        finally:
            del self._asking[key]

    @property
    def generation(self) -> int:
        """Changes whenever an answer is forgotten (see `joined`)."""
        return self._generation

    def forget(self, named: frozenset[str]) -> None:
        """Drop every answer standing on one of the `named` identities."""
        self._generation += 1
        for key, marks in list(self._yes.items()):
            if marks & named:
                self._yes.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._yes.clear()

    def __len__(self) -> int:
        return len(self._yes)


class Live(Protocol):
    """A connection the sweep looks after: a WebSocket, an SSE stream or a waiting long-poll."""

    caller: Caller
    marks: frozenset[str]
    due: float  # loop time of its next access check

    @property
    def over(self) -> bool: ...
    def end(self, code: int, reason: str) -> None: ...


class Allowance:
    """A token bucket of one connection: `burst` ops at once, refilled at `per_s`."""

    __slots__ = ("at", "burst", "per_s", "tokens")

    def __init__(self, burst: float, per_s: float) -> None:
        self.burst = burst
        self.per_s = per_s
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def next_check_in(caller: Caller, interval_s: float) -> float:
    """Seconds until the caller's access is asked again: the interval, or sooner at its expiry."""
    expires_at = getattr(caller, "expires_at", None)
    if expires_at is not None:
        left = float(expires_at) - time.time()
        if left > 0:
            return min(interval_s, left)
    return interval_s


async def still_allowed(rt: Realtime, caller: Caller) -> bool:
    """The injected check, asked now (the sweep); a check that fails (not one that says no)
    keeps the connection."""
    if rt.access_check is None:
        return True
    try:
        ok = await rt.access_check(caller)
    except Exception:
        log.exception("re-checking a live connection's access failed; asking again later")
        return True
    if not ok:
        rt.admissions.forget(marks_of(caller))
    return ok


async def admitted(rt: Realtime, caller: Caller) -> bool:
    """The injected check for a connection being opened: a recent "yes" for this caller stands
    (`Admissions`). A check that fails refuses nothing (as `still_allowed`)."""
    check = rt.access_check
    if check is None:
        return True
    try:
        return await rt.admissions.ask(caller, marks_of(caller), lambda: check(caller))
    except Exception:
        log.exception("checking a new connection's access failed; asking again at its first re-check")
        return True


def joined(rt: Realtime, conn: Live, generation: int) -> None:
    """`conn`, admitted when `rt.admissions.generation` was `generation`, has just joined the
    sweep. If access ended for anyone since (a note it may have missed while being admitted),
    it is checked now rather than at its interval."""
    if rt.admissions.generation != generation:
        conn.due = 0.0
        rt.recheck_now.set()


def live(rt: Realtime) -> list[Live]:
    return [*rt.connections, *rt.streams]


def access_ended(rt: Realtime, data: bytes) -> None:
    """An `access` note: connections standing on a named identity are due a check now (the
    sweep, woken here, does the closing)."""
    named = frozenset(orjson.loads(data))
    rt.admissions.forget(named)
    hit = 0
    for conn in live(rt):
        if conn.marks & named and not conn.over:
            conn.due = 0.0
            hit += 1
    if hit:
        rt.recheck_now.set()


async def recheck_due(rt: Realtime) -> int:
    """Ask again for every connection that is due; close those whose access is gone. Returns how
    many were closed. Connections of the same caller share one check."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    due: dict[Caller, list[Live]] = {}
    for conn in live(rt):
        if conn.due <= now and not conn.over:
            due.setdefault(conn.caller, []).append(conn)
    closed = 0
    interval = rt.settings.ws_access_recheck_s
    for caller, conns in due.items():
        ok = await still_allowed(rt, caller)
        for conn in conns:
            if ok:
                conn.due = loop.time() + next_check_in(caller, interval)
            else:
                conn.end(SIGNED_OUT_CODE, SIGNED_OUT)
                closed += 1
    return closed


async def recheck_forever(rt: Realtime) -> None:
    """The sweep: every step, or at once when an `access` note marked connections due."""
    step = min(SWEEP_STEP_S, rt.settings.ws_access_recheck_s)
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(step):
                await rt.recheck_now.wait()
        rt.recheck_now.clear()
        try:
            await recheck_due(rt)
        except Exception:
            log.exception("re-checking live connections failed")

"""The life of long-running components: named loops under a supervisor.

Every background loop of the process (relay, hub, presence, dispatcher side loops, deliverer,
report job, LISTEN connections) runs through a `Supervisor`:

* a loop that raises is logged with its traceback and restarted after a backoff that doubles
  up to `backoff_max_s` (and starts over once the loop has stayed up for `stable_s`);
* while it is down, `health()` names it, and `/readyz` answers 503 with that name;
* `stop()` cancels what is still running and waits for it (the drain of work in flight is the
  owner's job, done before it calls `stop()`).

A loop that returns on its own has finished (e.g. because its owner asked it to stop); a loop
created with `restart=False` is not restarted, and `on_crash` tells its owner instead (the
dispatcher stops the worker when one of its loops fails).

This module is generic: it knows nothing of the server, so the realtime layer uses it too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("switchboard.lifecycle")

BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 1.0  # a restarted loop that survives this long counts as up again

LoopFactory = Callable[[], Awaitable[None]]


class Component(Protocol):
    """A long-running part of the process, started and stopped with it (by `Services`); its
    `health()` (usually its supervisor's) names each of its loops that is down, for `/readyz`."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> dict[str, str]: ...


class Supervisor:
    """Runs the named loops of one component; see the module docstring."""

    def __init__(
        self,
        owner: str,
        *,
        backoff_s: float = BACKOFF_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        stable_s: float = STABLE_S,
    ) -> None:
        self.owner = owner
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_s = stable_s
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.down: dict[str, str] = {}  # loop name → why it is down
        self.crashes: dict[str, int] = {}
        self._stopping = False

    def spawn(
        self,
        name: str,
        loop: LoopFactory,
        *,
        restart: bool = True,
        on_crash: Callable[[str, BaseException], None] | None = None,
    ) -> asyncio.Task[None]:
        """Run `loop()` as the task `name`; each restart calls `loop()` again."""
        if name in self.tasks and not self.tasks[name].done():
            raise RuntimeError(f"{self.owner}: a loop named {name!r} is already running")
        self._stopping = False
        task = asyncio.create_task(self._run(name, loop, restart, on_crash), name=name)
        self.tasks[name] = task
        return task

    def health(self) -> dict[str, str]:
        """Each loop that is down, with the reason (empty when all are up)."""
        return dict(self.down)

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self.tasks.values())

    async def stop(self, *names: str) -> None:
        """Cancel the named loops (default: all) and wait until each has ended."""
        if not names:
            self._stopping = True
        tasks = [t for n, t in self.tasks.items() if not names or n in names]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for n in names or list(self.tasks):
            self.tasks.pop(n, None)
            self.down.pop(n, None)

    async def _run(
        self,
        name: str,
        loop: LoopFactory,
        restart: bool,
        on_crash: Callable[[str, BaseException], None] | None,
    ) -> None:
        clock = asyncio.get_running_loop()
        delay = self.backoff_s
        while True:
            started = clock.time()
            recovered: asyncio.TimerHandle | None = None
            if name in self.down:
                recovered = clock.call_later(self.stable_s, self.down.pop, name, None)
            try:
                await loop()
                return  # finished on purpose
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if recovered is not None:
                    recovered.cancel()
                self.crashes[name] = self.crashes.get(name, 0) + 1
                self.down[name] = f"crashed ({exc.__class__.__name__}: {exc})"[:200]
                if not restart or self._stopping:
                    log.error("%s: loop %s crashed", self.owner, name, exc_info=exc)
                    if on_crash is not None:
                        on_crash(name, exc)
                    return
                if clock.time() - started > self.stable_s:
                    delay = self.backoff_s
                log.error("%s: loop %s crashed; restarting in %.1fs", self.owner, name, delay, exc_info=exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

"""A few worker processes that run template checks and previews under a wall-clock deadline.

The sandbox's work budget (`sandbox.py`) refuses the amplifiers it knows; this is the backstop for
what it misses. A thread cannot be stopped, so the work goes to another process: the event loop
only waits on a pipe, and a worker that passes its deadline is killed and replaced, so a template
never holds the web process, the worker or another tenant's request for longer than the deadline.
Workers are fresh interpreters (no copy of the parent's event loop, sockets or threads) and run
with a memory ceiling, so a template cannot take the machine's memory either.

Jobs are plain module-level functions with picklable arguments and results."""

from __future__ import annotations

import asyncio
import atexit
import importlib
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("switchboard.templates")

WORKERS = 2
DEADLINE = 1.0  # seconds a check may run; a legitimate one takes milliseconds
# Compiling is linear in the source and slow (2 to 5 s for 100,000 characters on a loaded CPU): a long
# template gets this much more time per character, so that a legitimate one is never cut off.
DEADLINE_PER_CHAR = 1e-4
MEMORY_LIMIT = 1 << 30  # bytes of address space per worker
START_TIMEOUT = 30.0  # seconds for a new worker to import the sandbox (a loaded machine is slow)
PRELOAD = ("server.templates.render",)  # the modules the jobs live in


class DeadlineExceeded(Exception):
    pass


def _serve(conn: Connection) -> None:
    """A worker's loop: run each job it is sent and send back ("ok", result) or ("error", text)."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # pragma: no cover - a platform that refuses: the deadline still holds
        pass
    for module in PRELOAD:
        importlib.import_module(module)
    conn.send(("ready", None))
    while True:
        try:
            job, args = conn.recv()
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", job(*args))
        except MemoryError:
            reply = ("error", "the template uses too much memory")
        except Exception as exc:  # a bug in a job: reported, the worker lives on
            reply = ("error", f"{exc.__class__.__name__}: {exc}")
        conn.send(reply)


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class _Worker:
    """One worker process, started as `python -m server.templates.pool FD` (not through
    multiprocessing, which would import the parent's `__main__` in the child) and ready once it
    has imported the jobs' modules: the deadline never pays for a cold start."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
            self.conn = Connection(os.dup(ours.fileno()))
        try:
            if not self.conn.poll(START_TIMEOUT) or self.conn.recv()[0] != "ready":
                raise RuntimeError("a template worker did not start")
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)
        self.conn.close()


class RenderPool:
    """`await pool.run(job, *args)`: the job's result, `DeadlineExceeded`, or `RuntimeError` with
    the job's error. Workers start on first use; nothing here is bound to one event loop."""

    def __init__(self, workers: int = WORKERS, deadline: float = DEADLINE) -> None:
        """`deadline` is for a job that does not name its own (`run(..., deadline=)`)."""
        self.size = workers
        self.deadline = deadline
        self._idle: list[_Worker] = []
        self._started = 0
        self._lock = threading.Lock()
        atexit.register(self.close)  # workers go with the process, without a warning

    async def _take(self) -> _Worker:
        while True:
            with self._lock:
                if self._idle:
                    return self._idle.pop()
                start = self._started < self.size
                if start:
                    self._started += 1
            if start:
                try:
                    return await asyncio.to_thread(_Worker)
                except BaseException:
                    with self._lock:
                        self._started -= 1
                    raise
            await asyncio.sleep(0.005)  # all busy: rare, and bounded by the deadline

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _drop(self, worker: _Worker) -> None:
        with self._lock:
            self._started -= 1
        threading.Thread(target=worker.kill, name="template-worker-reaper", daemon=True).start()

    async def run(self, job: Callable[..., Any], *args: Any, deadline: float | None = None) -> Any:
        deadline = self.deadline if deadline is None else deadline
        worker = await self._take()
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = worker.conn.fileno()
        try:
            # An event loop may leave a watched descriptor non-blocking (uvloop does): a job or
            # answer larger than the socket's buffer would then fail half-sent with BlockingIOError.
            os.set_blocking(fd, True)
            worker.conn.send((job, args))
            loop.add_reader(fd, _settle, ready)
            try:
                await asyncio.wait_for(ready, deadline)
            finally:
                loop.remove_reader(fd)
            os.set_blocking(fd, True)
            status, value = worker.conn.recv()
        except TimeoutError:
            log.warning(
                "template job %s passed its %.1f s deadline; its worker is replaced",
                job.__name__,
                deadline,
            )
            self._drop(worker)
            raise DeadlineExceeded(f"the template takes longer than {deadline:.3g} s to render") from None
        except BaseException:
            self._drop(worker)  # cancelled or broken mid-job: its state is unknown
            raise
        self._give_back(worker)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.kill()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))

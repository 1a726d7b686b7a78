"""`switchboard worker`: the dispatcher alone in its process, stopped gracefully by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from server.metrics import WorkerMetricsServer
from server.services import Services, build_services
from server.settings import Settings

log = logging.getLogger("switchboard.worker")


def worker_services(settings: Settings) -> Services:
    """The worker's composition root: the same `Services` as the web's, without the realtime
    layer (it serves no clients; NOTIFY and the relays of the web processes publish its events)."""
    services = build_services(settings, web=False, jobs=True)
    if settings.worker_metrics_port:
        services.components.append(WorkerMetricsServer(services, settings.worker_metrics_port))
    return services


async def run_worker(settings: Settings) -> None:
    """Run until a signal asks to stop (exit 0) or the dispatcher fails (raises its error)."""
    services = worker_services(settings)
    dispatcher = services.dispatcher
    assert dispatcher is not None
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, asked.set)
    await services.start()
    log.info("worker running; SIGTERM stops it after the sends in flight")
    waiters = [asyncio.ensure_future(asked.wait()), asyncio.ensure_future(dispatcher.stopped.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await services.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if dispatcher.error is not None:
        raise RuntimeError("the dispatcher stopped on an error") from dispatcher.error

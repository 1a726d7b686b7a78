"""`switchboard worker`: the dispatcher alone in its process, stopped gracefully by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from server.endpoints.deliverer import Deliverer, DelivererConfig
from server.messages.dispatcher import Dispatcher
from server.metrics import WorkerMetricsServer
from server.reports.job import ReportJob
from server.services import Services
from server.settings import Settings

log = logging.getLogger("switchboard.worker")


async def run_worker(settings: Settings) -> None:
    """Run until a signal asks to stop (exit 0) or the dispatcher fails (raises its error)."""
    services = Services.create(settings)
    dispatcher = Dispatcher(services)
    services.components.append(dispatcher)
    # Daily figures (today's move live); also the audit log's retention.
    services.components.append(ReportJob(services.db, audit_retention_days=settings.audit_retention_days))
    # Outgoing webhooks (web --no-worker has none).
    services.components.append(
        Deliverer(services.db, DelivererConfig(allow_private=settings.allow_private_endpoints))
    )
    if settings.worker_metrics_port:
        services.components.append(WorkerMetricsServer(services, settings.worker_metrics_port))
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

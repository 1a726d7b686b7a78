"""The two servers the benchmark loads: Switchboard itself, and a bare Starlette endpoint."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def switchboard() -> Starlette:
    """The real app, from the `SWITCHBOARD_*` environment (uvicorn `--factory`)."""
    from server.app import create_app
    from server.runtime import settle_heap
    from server.webhooks import ingest
    from server.webhooks.api import routes

    if writers := os.environ.get("BENCH_WEBHOOK_WRITERS"):
        ingest.WRITERS = int(writers)  # the benchmark's --writers, for comparing pipelines

    app = create_app()
    if not any(getattr(r, "path", None) == "/webhooks/{provider_id}" for r in app.router.routes):
        app.router.routes.extend(routes)  # until the app wires the webhook routes itself
    settle_heap()  # as `switchboard serve` does before serving
    return app


async def _ok(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")


def bare() -> Starlette:
    """The ceiling: read the body, answer 200, nothing else."""
    return Starlette(routes=[Route("/webhooks/{provider_id}", _ok, methods=["POST"])])

"""The composition root: web and worker build the same typed `Services`, once."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from realtime.service import Realtime
from server.api import all_operations
from server.app import ROUTERS, create_app
from server.cache import Caches
from server.contacts.importer import Importer
from server.endpoints.deliverer import Deliverer
from server.messages.campaigns import CampaignRunner
from server.messages.dispatcher import Dispatcher
from server.messages.worker import worker_services
from server.metrics import Metrics
from server.ratelimit import RateLimits
from server.reports.job import ReportJob
from server.services import Services
from tests.conftest import make_settings


def _core_is_typed(s: Services) -> None:
    assert isinstance(s.metrics, Metrics) and isinstance(s.caches, Caches)
    assert isinstance(s.ratelimits, RateLimits) and isinstance(s.importer, Importer)
    assert isinstance(s.campaigns, CampaignRunner)
    assert not hasattr(s, "extras")


async def test_the_worker_builds_the_same_typed_services(db_url: str) -> None:
    worker = worker_services(make_settings(db_url))
    assert type(worker) is Services
    _core_is_typed(worker)
    assert isinstance(worker.dispatcher, Dispatcher) and isinstance(worker.deliverer, Deliverer)
    assert isinstance(worker.reports, ReportJob)
    assert worker.realtime is None  # it serves no clients
    for c in (worker.dispatcher, worker.deliverer, worker.reports, worker.importer, worker.campaigns):
        assert sum(x is c for x in worker.components) == 1  # started once, by the root
    await worker.db.dispose()


async def test_web_and_embedded_serve_build_their_components_at_start_up(db_url: str) -> None:
    web = create_app(make_settings(db_url)).state.services
    _core_is_typed(web)
    assert isinstance(web.realtime, Realtime)
    assert web.dispatcher is None and web.deliverer is None and web.reports is None
    embedded = create_app(make_settings(db_url, embedded_worker=True)).state.services
    assert isinstance(embedded.realtime, Realtime) and isinstance(embedded.dispatcher, Dispatcher)
    assert isinstance(embedded.deliverer, Deliverer) and isinstance(embedded.reports, ReportJob)
    # The same fields in every process: one type, no string-keyed extras.
    names = {f.name for f in dataclasses.fields(Services)}
    assert {"redis", "realtime", "caches", "metrics", "ratelimits", "dispatcher", "deliverer"} <= names
    for s in (web, embedded):
        await s.db.dispose()


def test_handlers_reach_the_services_through_the_one_typed_accessor() -> None:
    """Starlette's `app.state` is untyped: a `.state.services` read anywhere but in
    `server.state.services_of` hands its caller `Any`, and mypy checks nothing it does with it."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("server", "realtime", "ui"):
        for path in sorted((root / package).rglob("*.py")):
            if path == root / "server" / "state.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Load)
                    and node.attr == "services"
                    and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "state"
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_every_handler_declares_the_body_it_is_given() -> None:
    """`Ctx[T]` types `ctx.body` as `T`: a handler's `Ctx[...]` must be its operation's body model
    (`Ctx[None]` without one), or mypy checks the handler against the wrong type."""
    wrong = []
    for o in all_operations(ROUTERS):
        ctx_type = next(iter(typing.get_type_hints(o.handler).values()))
        declared = typing.get_args(ctx_type)
        given = type(None) if o.body is None else o.body
        if declared != (given,):
            wrong.append(f"{o.method} {o.path}: handler takes {ctx_type}, body is {given.__name__}")
    assert wrong == []

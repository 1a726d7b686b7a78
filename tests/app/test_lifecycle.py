"""One component lifecycle: a crashed loop is restarted with backoff, and /readyz names it while down."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from realtime.lifecycle import Supervisor
from server.app import create_app
from tests.conftest import make_settings, until


class Flaky:
    """A component whose loop crashes until told not to."""

    def __init__(self) -> None:
        self.supervisor = Supervisor("flaky", backoff_s=0.2, backoff_max_s=0.4, stable_s=0.2)
        self.failing = True
        self.runs = 0

    async def start(self) -> None:
        self.supervisor.spawn("flaky-loop", self._loop)

    async def stop(self) -> None:
        await self.supervisor.stop()

    def health(self) -> dict[str, str]:
        return self.supervisor.health()

    async def _loop(self) -> None:
        self.runs += 1
        if self.failing:
            raise RuntimeError("the disk is on fire")
        await asyncio.Event().wait()


async def test_a_crashed_loop_is_restarted_and_readyz_names_it_while_down(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(db_url))
    flaky = Flaky()
    app.state.services.components.append(flaky)
    caplog.set_level(logging.ERROR, logger="switchboard.lifecycle")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
            check = r.json()["checks"]["flaky-loop"]
            assert check.startswith("down") and "the disk is on fire" in check
            assert "flaky-loop" in r.json()["detail"]
            assert r.json()["checks"]["database"] == "ok"
            await until(lambda: flaky.runs >= 3, what="restarts with backoff")
            crash = next(rec for rec in caplog.records if "flaky-loop crashed" in rec.getMessage())
            assert crash.exc_info is not None  # logged with its traceback

            flaky.failing = False

            async def green() -> Any:
                return (await c.get("/readyz")).status_code == 200

            await until(green, within=5, what="/readyz green once the loop stays up")
            assert "flaky-loop" not in (await c.get("/readyz")).json()["checks"]
    assert not flaky.supervisor.running  # shutdown stopped it


async def test_a_loop_without_restart_tells_its_owner() -> None:
    crashed: list[tuple[str, BaseException]] = []
    sup = Supervisor("owner", backoff_s=0.01)

    async def boom() -> None:
        raise ValueError("bad")

    task = sup.spawn("once", boom, restart=False, on_crash=lambda n, e: crashed.append((n, e)))
    await task
    assert [(n, str(e)) for n, e in crashed] == [("once", "bad")]
    assert "once" in sup.health()
    await sup.stop()
    assert sup.health() == {}


async def test_a_crashed_campaign_sweep_turns_readyz_red(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every component of the root reports its loops, the campaign runner's sweep included."""
    app = create_app(make_settings(db_url))
    runner = app.state.services.campaigns
    runner.sweep_s = 0.05
    runner.supervisor.backoff_s = 30.0  # stays down while the test looks

    async def broken() -> list[int]:
        raise RuntimeError("the campaign table is on fire")

    async with app.router.lifespan_context(app):
        monkeypatch.setattr(runner, "sweep", broken)  # after the sweep at start-up
        await until(lambda: "campaign-sweep" in runner.supervisor.health(), what="the sweep crashed")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/readyz")
        assert r.status_code == 503, r.text
        assert "the campaign table is on fire" in r.json()["checks"]["campaign-sweep"]

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from server.db import Database
from server.endpoints.deliverer import Deliverer, DelivererConfig
from tests.endpoints.receiver import Receiver, running_receiver

# Seconds instead of hours, so retries, give-ups and disablement happen within a test.
FAST = {
    "poll_s": 0.05,
    "timeout_s": 5.0,  # generous: a spurious timeout under load would add a request
    "backoff_base_s": 0.05,
    "backoff_factor": 2.0,
    "backoff_max_s": 0.2,
    "jitter": 0.0,
    "error_pause_s": 0.1,
    "allow_private": True,  # the receiver listens on 127.0.0.1
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as r:
        yield r


DelivererFactory = Callable[..., Awaitable[Deliverer]]


@pytest.fixture
async def start_deliverer(db: Database) -> AsyncIterator[DelivererFactory]:
    started: list[Deliverer] = []

    async def factory(**overrides: Any) -> Deliverer:
        d = Deliverer(db, DelivererConfig(**{**FAST, **overrides}))
        await d.start()
        started.append(d)
        return d

    yield factory
    for d in started:
        await d.stop()

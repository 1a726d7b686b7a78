from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .support import World


@pytest.fixture
async def world(app: Any) -> AsyncIterator[World]:
    w = await World(app).build()
    yield w
    await w.close()

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.providers.conftest import (  # noqa: F401  (the fake providers, for test_outbound)
    http,
    provider_server,
    provider_servers,
)

from .support import World


@pytest.fixture
async def world(app: Any) -> AsyncIterator[World]:
    w = await World(app).build()
    yield w
    await w.close()

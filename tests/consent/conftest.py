from __future__ import annotations

import pytest

from server.settings import Settings
from tests.conftest import make_settings
from tests.ui import conftest as ui_conftest

PUBLIC_URL = "https://switchboard.example.test"
browser_client = ui_conftest.browser_client  # the signed-in browser fixture of the UI tests
OLD_SECRET = "rotated-away-secret-" + "o" * 32


@pytest.fixture
def settings(db_url: str) -> Settings:
    """A public URL (unsubscribe links are absolute) and one previous secret key still honoured."""
    return make_settings(db_url, public_url=PUBLIC_URL, previous_secret_keys=[OLD_SECRET])

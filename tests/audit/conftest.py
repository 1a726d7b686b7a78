"""The browser-like client of the UI tests, for the identity pages."""

from tests.ui.conftest import browser_client  # noqa: F401 (a fixture)

"""The dispatcher's fixtures (a seeded PostgreSQL world, running dispatchers) for hostile-tenant tests."""

from __future__ import annotations

from tests.dispatcher.conftest import make_dispatcher, make_sink, pg_world

__all__ = ["make_dispatcher", "make_sink", "pg_world"]

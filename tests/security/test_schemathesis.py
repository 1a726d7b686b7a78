"""Property-based checks of the whole API against its own OpenAPI document (schemathesis):
no 500, and every response matches the documented status codes, content types and schemas.
On SQLite and on PostgreSQL (which refuses what SQLite stores: NUL characters, integers beyond
int64; the generated strings and integers include both). Bounded: a few examples per operation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi import checks as oa

from server.app import create_app
from server.db import Database
from tests.conftest import PASSWORD, _truncate_pg, alembic_upgrade, in_thread, make_settings
from tests.support_server import serve_in_thread

# Examples per operation: about 45 s on SQLite and 40 s on PostgreSQL on a loaded 2-core machine.
EXAMPLES = {"sqlite": 12, "postgres": 8}
HUGE = 2**70

CHECKS: list[CheckFunction] = [
    oa.not_a_server_error if hasattr(oa, "not_a_server_error") else schemathesis.checks.not_a_server_error,  # type: ignore[attr-defined]
    oa.status_code_conformance,
    oa.content_type_conformance,
    oa.response_schema_conformance,
]


async def _seed(url: str) -> None:
    """The admin the run signs in as, written through its own engine (an asyncpg pool belongs to
    the event loop that opened it; the app's runs in the server thread)."""
    from server.auth import service
    from server.auth.models import Role

    db = Database(url)
    try:
        async with db.transaction() as s:
            ws = await service.get_or_create_workspace(s, name="Fuzz")
            await service.create_user(
                s, workspace_id=ws.id, email="fuzz@fuzz.test", password=PASSWORD, role=Role.admin
            )
    finally:
        await db.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
        url = f"sqlite+aiosqlite:///{path}"
        alembic_upgrade(url)
    else:
        url = request.getfixturevalue("pg_database")
        in_thread(asyncio.run, _truncate_pg(url))
    in_thread(asyncio.run, _seed(url))
    app = create_app(make_settings(url))
    with serve_in_thread(app) as base:
        token = httpx.post(
            f"{base}/api/v1/auth/login", json={"email": "fuzz@fuzz.test", "password": PASSWORD}
        ).json()
        yield base, token["access_token"]


@pytest.fixture(scope="module")
def api_schema(api: tuple[str, str]) -> Any:
    base, _token = api
    return schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")


def _poison(value: Any, how: str) -> Any:
    if isinstance(value, str):
        return value + "\x00" if how == "nul" else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return HUGE if how == "int" else value
    if isinstance(value, dict):
        return {k: _poison(v, how) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, how) for v in value]
    return value


def hostile(case: Any, how: str) -> Any:
    """The generated case with a NUL appended to every string ("nul") or every integer made
    2^70 ("int"), in its body, query and path: what PostgreSQL refuses and SQLite stores."""
    for part in ("body", "query", "path_parameters"):
        value = getattr(case, part, None)
        if isinstance(value, dict | list | str | int):
            setattr(case, part, _poison(value, how))
    return case


def test_api_conforms_to_its_schema(
    request: pytest.FixtureRequest, api: tuple[str, str], api_schema: Any
) -> None:
    examples = EXAMPLES[request.node.callspec.params["api"]]
    _base, token = api
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/v1/auth/logout":
            continue  # revoking tokens mid-run is covered by the auth tests

        plain = operation.as_strategy()

        @given(
            case=st.one_of(
                plain, plain.map(lambda c: hostile(c, "nul")), plain.map(lambda c: hostile(c, "int"))
            )
        )
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        operations += 1
        try:
            run()
        except BaseException as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)

"""Property-based checks of the whole API against its own OpenAPI document (schemathesis):
no 500, and every response matches the documented status codes, content types and schemas.
Bounded: a few examples per operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi import checks as oa

from server.app import create_app
from tests.conftest import PASSWORD, alembic_upgrade, in_thread, make_settings
from tests.support_server import serve_in_thread

EXAMPLES = 12

CHECKS: list[CheckFunction] = [
    oa.not_a_server_error if hasattr(oa, "not_a_server_error") else schemathesis.checks.not_a_server_error,  # type: ignore[attr-defined]
    oa.status_code_conformance,
    oa.content_type_conformance,
    oa.response_schema_conformance,
]


async def _seed(app: Any) -> None:
    from server.auth import service
    from server.auth.models import Role

    async with app.state.services.db.transaction() as s:
        ws = await service.get_or_create_workspace(s, name="Fuzz")
        await service.create_user(
            s, workspace_id=ws.id, email="fuzz@fuzz.test", password=PASSWORD, role=Role.admin
        )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    url = f"sqlite+aiosqlite:///{path}"
    alembic_upgrade(url)
    app = create_app(make_settings(url))
    with serve_in_thread(app) as base:
        import asyncio

        in_thread(asyncio.run, _seed(app))
        token = httpx.post(
            f"{base}/api/v1/auth/login", json={"email": "fuzz@fuzz.test", "password": PASSWORD}
        ).json()
        yield base, token["access_token"]


@pytest.fixture(scope="module")
def api_schema(api: tuple[str, str]) -> Any:
    base, _token = api
    return schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")


def test_api_conforms_to_its_schema(api: tuple[str, str], api_schema: Any) -> None:
    _base, token = api
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/v1/auth/logout":
            continue  # revoking tokens mid-run is covered by the auth tests

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
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

"""`SWITCHBOARD_PAGE_LIMIT_DEFAULT` and `_MAX` drive every list (docs/operations.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.api import Operation, all_operations, parse_model
from server.app import ROUTERS
from server.errors import Problem
from tests.ops.conftest import AppFactory, sign_in


async def test_page_limit_settings_set_the_default_and_the_cap(make_app: AppFactory) -> None:
    app = await make_app(page_limit_default=2, page_limit_max=3)
    client = await sign_in(app)
    for i in range(4):
        r = await client.post("/api/v1/contacts", json={"name": f"C{i}", "email": f"c{i}@example.test"})
        assert r.status_code == 201, r.text
    page = (await client.get("/api/v1/contacts")).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    assert len((await client.get("/api/v1/contacts", params={"limit": 3})).json()["items"]) == 3
    r = await client.get("/api/v1/contacts", params={"limit": 4})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.limit"
    assert (await client.get("/api/v1/templates", params={"limit": 4})).status_code == 422
    assert (await client.get("/api/v1/contacts", params={"limit": 0})).status_code == 422


@pytest.mark.parametrize(
    "operation",
    [o for o in all_operations(ROUTERS) if o.query is not None and "limit" in o.query.model_fields],
    ids=lambda o: f"{o.method} {o.path}",
)
def test_every_list_takes_its_limits_from_the_settings(operation: Operation) -> None:
    context = {"page_limit_default": 7, "page_limit_max": 9}
    assert parse_model(operation.query, {}, where="query", context=context).limit == 7
    assert parse_model(operation.query, {"limit": "9"}, where="query", context=context).limit == 9
    with pytest.raises((Problem, ValidationError)):
        parse_model(operation.query, {"limit": "10"}, where="query", context=context)

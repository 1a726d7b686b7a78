from __future__ import annotations

from typing import Any

import httpx
from starlette.routing import Route

from tests.conftest import ClientFactory


async def test_unknown_route_and_wrong_method_are_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404
    r = await client.put("/api/v1/contacts")
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"


async def test_crash_is_500_problem_without_traceback(app: Any, make_client: ClientFactory) -> None:
    async def boom(_request: Any) -> Any:
        raise RuntimeError("secret internals")

    app.router.routes.append(Route("/boom", boom))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    )
    async with client:
        r = await client.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in r.text and "Traceback" not in r.text


async def test_health_ready_and_request_id(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    assert len(r.headers["x-request-id"]) >= 16
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_readyz_fails_when_redis_is_unreachable(db_url: str) -> None:
    from server.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(db_url, redis_url="redis://127.0.0.1:1/0"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["redis"].startswith("unreachable")
    assert r.json()["checks"]["database"] == "ok"


async def test_openapi_lists_operations_with_schemas(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    post = spec["paths"]["/api/v1/contacts"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert "email" in spec["components"]["schemas"][name]["properties"]
    assert "409" in post["responses"]
    assert "/api/v1/auth/login" in spec["paths"]
    assert "patch" in spec["paths"]["/api/v1/contacts/{contact_id}"]

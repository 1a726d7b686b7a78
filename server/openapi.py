"""The OpenAPI document, generated from the same pydantic models that validate requests."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from server.api import Operation

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def build(operations: list[Operation], *, title: str = "Switchboard", version: str = "1") -> dict[str, Any]:
    models: list[tuple[Any, Any]] = []
    for o in operations:
        if o.body is not None:
            models.append((o.body, "validation"))
        if o.response is not None and isinstance(o.response, type) and issubclass(o.response, BaseModel):
            models.append((o.response, "serialization"))
    keys, defs = models_json_schema(list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}")
    schemas = dict(defs.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for o in operations:
        path_params = re.findall(r"{(\w+)}", o.path)
        spec: dict[str, Any] = {
            "summary": o.summary,
            "operationId": o.handler.__module__.split(".")[-2] + "_" + o.handler.__name__,
        }
        if o.tag:
            spec["tags"] = [o.tag]
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
            for p in path_params
        ]
        if o.query is not None:
            qs = TypeAdapter(o.query).json_schema()
            required = set(qs.get("required", []))
            for name, prop in qs.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if params:
            spec["parameters"] = params
        if o.body is not None:
            spec["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": keys[(o.body, "validation")]}},
            }
        responses: dict[str, Any] = {}
        if o.status == 204:
            responses["204"] = {"description": "No content"}
        elif o.response is not None and (o.response, "serialization") in keys:
            responses[str(o.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": keys[(o.response, "serialization")]}},
            }
        else:
            responses[str(o.status)] = {
                "description": "OK",
                "content": {t: {"schema": {}} for t in o.media_types},
            }
        problem = {
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        }
        codes = {
            400: "Bad request",
            413: "Too large",
            422: "Validation failed",
            429: "Rate limited",
            503: "Unavailable",
        }
        if path_params:
            codes[404] = "Not found"
        if o.body is not None:
            codes[415] = "Unsupported media type"
        codes |= o.extra_responses
        if o.role is not None:
            codes |= {401: "Not signed in", 403: "Forbidden"}
        for code, desc in codes.items():
            responses[str(code)] = {"description": desc, **problem}
        spec["responses"] = responses
        if o.role is not None:
            spec["security"] = [{"bearer": []}]
        paths.setdefault(o.path, {})[o.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }

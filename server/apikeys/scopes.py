"""What an API key may do: one scope per operation, from a rule over the route (DESIGN §10).

    admin           every admin operation (users, providers, endpoints, API keys, audit, SSO)
    events:read     the live streams: /ws, long-poll, SSE
    contacts:read   every other read (contacts, templates, messages, reports, …)
    messages:send   writes under /messages, /campaigns, /conversations
    contacts:write  every other write (contacts, imports, merges, templates, …)

An operation may name its scope instead (`Router.op(scope=…)`)."""

from __future__ import annotations

from server.errors import Problem

SCOPES = ("contacts:read", "contacts:write", "messages:send", "events:read", "admin")
_READS = {"GET", "HEAD", "OPTIONS"}
_SENDS = ("/messages", "/campaigns", "/conversations")


def scope_for(method: str, path: str, role: str | None) -> str:
    if role == "admin":
        return "admin"
    route = path.removeprefix("/api/v1")
    if route.startswith("/events"):
        return "events:read"
    if method.upper() in _READS:
        return "contacts:read"
    if route.startswith(_SENDS):
        return "messages:send"
    return "contacts:write"


def require_scope(scopes: frozenset[str], scope: str) -> None:
    """403 naming the missing scope. The `admin` scope does not stand in for the others."""
    if scope not in scopes:
        raise Problem(
            403, f"This API key lacks the {scope} scope.", errors=[{"field": "scope", "message": scope}]
        )

"""The enabled providers of each workspace and channel, in the order to try them, with their adapters.

An adapter is built once per provider row and kept while the row's `updated_at` stays the same (the
sandbox owns background webhook tasks; HTTP adapters share one client's connection pool)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.providers.adapters import ADAPTERS, Adapter, ConfigError
from server.providers.models import Provider

log = logging.getLogger(__name__)

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """One provider a message may go through. `adapter` is None when its config cannot be used."""

    provider_id: int
    name: str
    kind: str
    send_rate: float | None
    adapter: Adapter | None
    problem: str | None = None


def make_http_client(concurrency: int) -> httpx.AsyncClient:
    """The one client every adapter of the process shares. aiohttp does the HTTP/1.1 underneath:
    httpcore's pool rescans every connection for every request, and at 64 sends in flight it
    managed ~60 requests/s here against ~900/s through aiohttp (bench/dispatch)."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits), timeout=httpx.Timeout(15.0, connect=5.0), limits=limits
    )


def webhook_url(public_url: str | None, provider_id: int) -> str:
    return f"{(public_url or DEFAULT_PUBLIC_URL).rstrip('/')}/webhooks/{provider_id}"


class ProviderPool:
    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        public_url: str | None,
        adapters: Mapping[str, type[Adapter]] = ADAPTERS,
    ) -> None:
        self.http = http
        self.public_url = public_url
        self.adapters = adapters
        self._built: dict[int, tuple[dt.datetime, Route]] = {}
        self._retired: list[Adapter] = []

    async def load(
        self, session: AsyncSession, workspace_ids: set[int]
    ) -> dict[tuple[int, str], list[Route]]:
        """Routes by (workspace, channel), lowest priority number first."""
        rows = await session.execute(
            select(Provider)
            .where(Provider.workspace_id.in_(workspace_ids), Provider.enabled.is_(True))
            .order_by(Provider.priority, Provider.id)
        )
        routes: dict[tuple[int, str], list[Route]] = {}
        for p in rows.scalars():
            routes.setdefault((p.workspace_id, p.channel), []).append(self._route(p))
        return routes

    def _route(self, p: Provider) -> Route:
        built = self._built.get(p.id)
        if built is not None and built[0] == p.updated_at:
            return built[1]
        if built is not None and built[1].adapter is not None:
            self._retired.append(built[1].adapter)
        route = self._build(p)
        self._built[p.id] = (p.updated_at, route)
        return route

    def _build(self, p: Provider) -> Route:
        cls = self.adapters.get(p.kind)
        if cls is None:
            return Route(p.id, p.name, p.kind, p.send_rate, None, f"unknown provider kind {p.kind!r}")
        try:
            adapter = cls(
                p.config,
                http=self.http,
                provider_id=p.id,
                webhook_url=webhook_url(self.public_url, p.id),
                webhook_key=p.webhook_key,
            )
        except ConfigError as exc:
            log.warning("provider %s (#%d) has an unusable config: %s", p.name, p.id, exc)
            return Route(
                p.id, p.name, p.kind, p.send_rate, None, f"provider {p.name!r} is misconfigured: {exc}"
            )
        return Route(p.id, p.name, p.kind, p.send_rate, adapter)

    async def aclose(self) -> None:
        adapters = self._retired + [r.adapter for _, r in self._built.values() if r.adapter is not None]
        self._built.clear()
        self._retired.clear()
        for adapter in adapters:
            await adapter.aclose()

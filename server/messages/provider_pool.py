"""The enabled providers of each workspace and channel, in the order to try them, with their adapters;
a conversation reply goes through the connection the customer wrote to (`Routes.for_message`).

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

from server.endpoints.guard import public_only_socket
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


@dataclasses.dataclass(slots=True)
class Routes:
    """The enabled providers of a batch's workspaces: by (workspace, channel), lowest priority
    number first, and by provider id."""

    by_channel: dict[tuple[int, str], list[Route]] = dataclasses.field(default_factory=dict)
    by_id: dict[int, tuple[int, Route]] = dataclasses.field(default_factory=dict)  # id -> (workspace, route)

    def for_message(self, workspace_id: int, channel: str, via_provider_id: int | None) -> list[Route]:
        """The providers to try, in order. A reply names the connection the customer wrote to
        (`message.via_provider_id`): only it, whatever channel its row was made for (a Twilio
        number receives SMS and WhatsApp alike), while it is enabled in the workspace and its kind
        sends the channel; otherwise the channel's providers, as for any message."""
        if via_provider_id is not None and (found := self.by_id.get(via_provider_id)) is not None:
            owner, route = found
            if owner == workspace_id and (route.adapter is None or channel in route.adapter.channels):
                return [route]
        return self.by_channel.get((workspace_id, channel), [])


def make_http_client(
    concurrency: int, *, allow_private: bool = False, public_url: str | None = None
) -> httpx.AsyncClient:
    """The one client every adapter of the process shares. aiohttp does the HTTP/1.1 underneath:
    httpcore's pool rescans every connection for every request, and at 64 sends in flight it
    managed ~60 requests/s here against ~900/s through aiohttp (bench/dispatch).

    Provider hosts are chosen by tenants, so every connection goes through the public-only guard
    (`server/endpoints/guard.py`) unless `allow_private`; only our own webhook origin
    (`public_url`, where the sandbox posts its delivery reports) is reached without it. Proxy
    variables in the environment are ignored: a proxy would make the connection the guard checks."""
    limits = httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=concurrency)
    transport = _aiohttp_transport(limits, guarded=not allow_private)
    if not allow_private:
        own = _aiohttp_transport(httpx.Limits(max_connections=4), guarded=False)
        transport = _OwnOrigin(_origin(httpx.URL(public_url or DEFAULT_PUBLIC_URL)), own, transport)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(15.0, connect=5.0),
        limits=limits,
        trust_env=False,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


class _OwnOrigin(httpx.AsyncBaseTransport):
    """Our own origin (scheme, host and port exactly) to `own`, everything else to `other`.
    httpx's `mounts` cannot say this: a pattern without a port, as `https://crm.example.com`
    is, matches every port of the host."""

    def __init__(
        self, origin: tuple[str, str, int], own: httpx.AsyncBaseTransport, other: httpx.AsyncBaseTransport
    ) -> None:
        self.origin = origin
        self.own = own
        self.other = other

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.own if _origin(request.url) == self.origin else self.other
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.own.aclose()
        await self.other.aclose()


def _aiohttp_transport(limits: httpx.Limits, *, guarded: bool) -> httpx.AsyncBaseTransport:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    ssl_context = httpx.create_ssl_context(trust_env=False)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=ssl_context,
            socket_factory=public_only_socket if guarded else None,
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    return AiohttpTransport(limits=limits, trust_env=False, client=session)


def webhook_url(public_url: str | None, provider_id: int) -> str:
    return f"{(public_url or DEFAULT_PUBLIC_URL).rstrip('/')}/webhooks/{provider_id}"


class ProviderPool:
    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        public_url: str | None,
        adapters: Mapping[str, type[Adapter]] = ADAPTERS,
        allow_private: bool = False,
    ) -> None:
        self.http = http
        self.allow_private = allow_private  # for connections adapters open themselves (SMTP)
        self.public_url = public_url
        self.adapters = adapters
        self._built: dict[int, tuple[dt.datetime, Route]] = {}
        self._retired: list[Adapter] = []

    async def load(self, session: AsyncSession, workspace_ids: set[int]) -> Routes:
        """The workspaces' enabled providers."""
        rows = await session.execute(
            select(Provider)
            .where(Provider.workspace_id.in_(workspace_ids), Provider.enabled.is_(True))
            .order_by(Provider.priority, Provider.id)
        )
        routes = Routes()
        for p in rows.scalars():
            route = self._route(p)
            routes.by_channel.setdefault((p.workspace_id, p.channel), []).append(route)
            routes.by_id[p.id] = (p.workspace_id, route)
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
                allow_private=self.allow_private,
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

"""`SWITCHBOARD_REDIS_URL` → the process's one `redis.asyncio.Redis` client. Parsed here only.

    redis://[[user]:password@]host:port[/db]           one server (redis-py's own URL form)
    rediss://…                                         the same over TLS
    unix:///path/to/redis.sock[?db=0]
    redis+sentinel://[[user]:password@]host:port[,host:port…]/<service>[/<db>][?options]
    rediss+sentinel://…                                the same, TLS to the servers and the sentinels

Sentinel options (query string): `sentinel_password`, `sentinel_username` (when the sentinels
have their own `requirepass`, else they get none), `ssl=true`, `sentinel_ssl=false` (TLS to the
Redis servers only), `ssl_ca_certs`, `ssl_cert_reqs=required|optional|none`, `socket_timeout`,
`socket_connect_timeout` (seconds). An unknown option is a start-up error, never ignored.

With Sentinel, the client is `Sentinel(...).master_for(service)`: every new connection asks the
sentinels for the primary, and a connection that meets a demoted primary (`READONLY`) is dropped
and raises `ConnectionError`, so every user of the client (relay lease and cursors, presence, rate
limits, notes) follows a failover on its next call. A pub/sub connection issues no writes, so
`stale_subscription` tells the hub when its connection no longer points at the primary."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CONNECT_TIMEOUT_S = 2.0  # fail fast while a server is down: /readyz answers, rate limits fail open
# No command on the data connection waits longer than this: a primary that vanished without a
# FIN (host lost) is given up on here, not after the kernel's TCP timeout. Pub/sub waits on its
# own timeout and is not affected.
SOCKET_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 10
_BOOL = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
_OPTIONS = {
    "sentinel_password",
    "sentinel_username",
    "ssl",
    "sentinel_ssl",
    "ssl_ca_certs",
    "ssl_cert_reqs",
    "socket_timeout",
    "socket_connect_timeout",
}


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False
    sentinel_ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str | None = None
    socket_timeout: float = SOCKET_TIMEOUT_S
    socket_connect_timeout: float = CONNECT_TIMEOUT_S


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Raises ValueError naming what is wrong (shown at start-up)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL: {scheme}://")
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) or None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"Sentinel URL: {item!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("Sentinel URL: give /<service name>[/<db>] after the sentinels")
    service = unquote(path[0])
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"Sentinel URL: database {path[1]!r} is not a number")
    db = int(path[1]) if len(path) == 2 else 0
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _OPTIONS)
    if unknown:
        raise ValueError(f"Sentinel URL: unknown option(s) {', '.join(unknown)}")

    def flag(name: str, default: bool) -> bool:
        if name not in query:
            return default
        value = _BOOL.get(query[name].lower())
        if value is None:
            raise ValueError(f"Sentinel URL: {name}={query[name]!r} is not true or false")
        return value

    def seconds(name: str, default: float) -> float:
        try:
            value = float(query.get(name, default))
        except ValueError:
            raise ValueError(f"Sentinel URL: {name}={query[name]!r} is not a number of seconds") from None
        if value <= 0:
            raise ValueError(f"Sentinel URL: {name} must be positive")
        return value

    ssl = flag("ssl", scheme == "rediss+sentinel")
    cert_reqs = query.get("ssl_cert_reqs")
    if cert_reqs is not None and cert_reqs not in ("required", "optional", "none"):
        raise ValueError(f"Sentinel URL: ssl_cert_reqs={cert_reqs!r} is not required, optional or none")
    return SentinelURL(
        sentinels=sentinels,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
        ssl=ssl,
        sentinel_ssl=flag("sentinel_ssl", ssl),
        ssl_ca_certs=query.get("ssl_ca_certs") or None,
        ssl_cert_reqs=cert_reqs,
        socket_timeout=seconds("socket_timeout", SOCKET_TIMEOUT_S),
        socket_connect_timeout=seconds("socket_connect_timeout", CONNECT_TIMEOUT_S),
    )


def connect_redis(url: str, *, client_name: str | None = None) -> Redis:
    """The client for `url` (no connection is opened until the first command)."""
    import redis.asyncio as aioredis

    common: dict[str, Any] = {"socket_keepalive": True, "health_check_interval": HEALTH_CHECK_S}
    if client_name:
        common["client_name"] = client_name  # CLIENT LIST shows whose connection it is
    if not is_sentinel_url(url):
        client: Redis = aioredis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, **common)
        return client

    from redis.asyncio.sentinel import Sentinel

    u = parse_sentinel_url(url)
    tls: dict[str, Any] = {}
    if u.ssl_ca_certs:
        tls["ssl_ca_certs"] = u.ssl_ca_certs
    if u.ssl_cert_reqs:
        tls["ssl_cert_reqs"] = u.ssl_cert_reqs
    timeouts = {"socket_timeout": u.socket_timeout, "socket_connect_timeout": u.socket_connect_timeout}
    sentinel_kwargs: dict[str, Any] = dict(timeouts)
    if u.sentinel_password:
        sentinel_kwargs["password"] = u.sentinel_password
    if u.sentinel_username:
        sentinel_kwargs["username"] = u.sentinel_username
    if u.sentinel_ssl:
        sentinel_kwargs.update(ssl=True, **tls)
    sentinel = Sentinel(u.sentinels, sentinel_kwargs=sentinel_kwargs)
    server: dict[str, Any] = {**common, **timeouts, "db": u.db}
    if u.password:
        server["password"] = u.password
    if u.username:
        server["username"] = u.username
    if u.ssl:
        server.update(ssl=True, **tls)
    primary: Any = sentinel.master_for(u.service, redis_class=_sentinel_redis_class(), **server)
    primary.sentinel = sentinel
    return cast("Redis", primary)


@cache
def _sentinel_redis_class() -> type[Redis]:
    from redis.asyncio import Redis

    class _SentinelRedis(Redis):
        """The primary's client; closing it also closes the connections to the sentinels."""

        sentinel: Any = None

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            if self.sentinel is not None:
                for s in self.sentinel.sentinels:
                    await s.aclose()

    return _SentinelRedis


async def stale_subscription(client: Any, connection: Any) -> bool:
    """True when `connection` (a pub/sub connection of `client`) no longer talks to the primary
    the sentinels name: subscribed to a demoted primary, it would hear nothing ever again.
    Always False without Sentinel. Raises RedisError when no sentinel answers."""
    pool = client.connection_pool
    master_address = getattr(pool, "get_master_address", None)
    if master_address is None or connection is None or getattr(connection, "host", None) is None:
        return False
    primary = await master_address()
    return (connection.host, connection.port) != tuple(primary)

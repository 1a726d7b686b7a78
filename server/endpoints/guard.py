"""Connections chosen by a tenant go to public addresses only, unless the operator allows private ones.

An outgoing webhook URL, a provider's `base_url`, a Slack `webhook_url`, a sandbox `sink_url` and an
SMTP host are chosen by a workspace admin, and Switchboard connects to them from inside our network:
pointed at 127.0.0.1:6379, 10.0.0.5 or 169.254.169.254 they would let one tenant probe or poke what
sits beside Switchboard. So a destination naming such an address is refused when it is saved, and
every connection checks the addresses its host resolves to at that moment and connects to a checked
one (a name that resolved to a public address when saved and to a private one later is refused
then). IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that
IPv4 address. `SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS` turns this off, for receivers and relays on your
own network (and the tests' local servers).

One guard, three connectors: httpcore's network backend (the deliverer), a socket factory for
aiohttp (the providers' HTTP client), and `connect_public` for SMTP."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HINT = "set SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS=true to connect to your own network"

NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the last 32 bits
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local use: never a public route
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")  # RFC 3056: IPv4 in bits 16..47
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT ::ffff:0:a.b.c.d
SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, still routed inside some networks


class NotPublic(OSError):
    """A connection refused by the guard: the address is not public."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through, if it is one of the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64 or ip in IPV4_TRANSLATED:
        return low32
    if ip in IPV4_COMPATIBLE and int(ip) > 1:  # not :: or ::1
        return low32
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL or ip in SITE_LOCAL:
            return False
        if (v4 := embedded_ipv4(ip)) is not None:
            ip = v4
    return ip.is_global and not ip.is_multicast


def refused_address(host: str) -> str | None:
    """Why a host (name or address literal, brackets allowed) is refused without looking it up."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine; {HINT}"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked when connecting
    return None if is_public(ip) else f"{host} is not a public address; {HINT}"


def refused_host(url: str) -> str | None:
    """Why the URL's host is refused without looking it up (an address literal or localhost)."""
    return refused_address(urlsplit(url).hostname or "")


def refused_destination(value: str) -> str | None:
    """`refused_host` for a URL, `refused_address` for a bare host."""
    return refused_host(value) if "://" in value else refused_address(value)


def check_address(address: str) -> None:
    """Raise `NotPublic` unless the resolved address (an IP string, maybe with a zone) is public."""
    if not is_public(ipaddress.ip_address(address.split("%", 1)[0])):
        raise NotPublic(f"{address} is not a public address; {HINT}")


async def public_addresses(host: str, port: int) -> list[tuple[int, Any]]:
    """(family, sockaddr) of every public address `host` resolves to now; `NotPublic` if none is."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[str, tuple[int, Any]] = {}
    for family, _type, _proto, _name, sockaddr in infos:
        found.setdefault(str(sockaddr[0]), (int(family), sockaddr))
    public = [v for a, v in found.items() if is_public(ipaddress.ip_address(a.split("%", 1)[0]))]
    if not public:
        raise NotPublic(f"{host} resolves to {', '.join(found)}: not public; {HINT}")
    return public


async def connect_public(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to a public address of `host` (for SMTP)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, sockaddr in await public_addresses(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert last is not None
    raise last


def public_only_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """An aiohttp `socket_factory`: called with each resolved address (literals included) just
    before connecting, so the address checked is the address connected to."""
    family, type_, proto, _name, sockaddr = addr_info
    check_address(str(sockaddr[0]))
    return socket.socket(family=family, type=type_, proto=proto)


def refusal(exc: BaseException) -> NotPublic | None:
    """The guard's refusal somewhere in an exception's causes, if that is what it is."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NotPublic):
            return e
        stack.extend((e.__cause__, e.__context__, getattr(e, "os_error", None)))
        stack.extend(x for x in getattr(e, "exceptions", ()) if isinstance(x, BaseException))
    return None


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to public addresses of the host it is given.
    TLS still verifies the certificate against the URL's host name (httpcore passes it apart)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                public = await public_addresses(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from exc
        except NotPublic as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        address = str(public[0][1][0])
        return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not public addresses")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def public_only_transport(**options: Any) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go to public addresses only."""
    transport = httpx.AsyncHTTPTransport(**options)
    pool = transport._pool  # httpx exposes no network-backend option; its pool does
    pool._network_backend = PublicOnlyBackend(pool._network_backend)
    return transport

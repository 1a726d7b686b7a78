"""Outgoing webhooks go to public addresses only, unless the operator allows private ones.

An endpoint URL is chosen by a workspace admin, and the deliverer posts to it from inside our
network: pointed at 127.0.0.1:6379, 10.0.0.5 or 169.254.169.254 it would let one tenant probe
or poke what sits beside Switchboard. So a URL naming such an address is refused when it is
registered, and every connection the deliverer opens checks the addresses its host resolves to
at that moment and connects to a checked one (a name that resolved to a public address when
registered and to a private one later is refused then). `SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS`
turns this off, for receivers on your own network (and the tests' local receivers)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HINT = "set SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS=true to deliver to your own network"


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def refused_host(url: str) -> str | None:
    """Why the URL's host is refused without looking it up (an address literal or localhost)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine; {HINT}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked when the deliverer connects
    return None if is_public(ip) else f"{host} is not a public address; {HINT}"


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
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        public = [a for a in addresses if is_public(ipaddress.ip_address(a.split("%", 1)[0]))]
        if not public:
            raise httpcore.ConnectError(f"{host} resolves to {', '.join(addresses)}: not public; {HINT}")
        return await self.inner.connect_tcp(public[0], port, timeout, local_address, socket_options)

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

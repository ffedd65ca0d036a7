"""Who the client is behind a balancer or reverse proxy (``--trusted-proxies CIDR,...``).

A request's ``remote`` is the TCP peer. Behind HAProxy, Caddy or nginx that
is the proxy, so every client would share one rate-limit bucket and the logs
and ``/api/sessions`` would name the proxy. When (and only when) the peer's
address lies in a trusted network, the client is taken from the headers the
proxy set:

* ``X-Forwarded-For`` (HAProxy ``option forwardfor``, nginx, Caddy): parsed
  and walked by aiohttp-remotes' ``XForwardedFiltered``: from the right,
  past every trusted hop, the first untrusted address is the client (so a
  chain CDN → Caddy → HAProxy works when all of them are trusted, and what a
  client wrote at the left end cannot win). ``X-Forwarded-Proto`` and
  ``X-Forwarded-Host`` follow the same hop, so the page's own origin is
  recognised behind a TLS-terminating proxy.
* ``Forwarded`` (RFC 7239), when there is no ``X-Forwarded-For``: aiohttp
  parses it; the same right-to-left walk picks the client.

A peer outside the trusted networks gets no say: its headers are ignored and
its own address is the client. A malformed header from a trusted proxy is a
400.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from realtime.settings import parse_networks

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 on a dual-stack socket
    return mapped if mapped is not None else address


class TrustedProxies:
    """aiohttp middleware: the real client's address (and scheme, host) from a trusted proxy's headers."""

    def __init__(self, networks: Iterable[str]) -> None:
        from aiohttp_remotes import XForwardedFiltered

        self.networks = parse_networks(networks)
        self._x_forwarded = XForwardedFiltered(set(self.networks)) if self.networks else None

    def trusts(self, address: str | None) -> bool:
        ip = _address(address)
        return ip is not None and any(ip.version == n.version and ip in n for n in self.networks)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._x_forwarded is None or not self.trusts(_peer(request)):
            return await handler(request)  # not from a proxy we trust: its headers name nobody
        if "X-Forwarded-For" in request.headers:
            return await self._x_forwarded.middleware(_one_header_each(request), handler)
        if "Forwarded" in request.headers:
            return await handler(self._from_forwarded(request))
        return await handler(request)

    def _from_forwarded(self, request: web.Request) -> web.Request:
        """RFC 7239 ``Forwarded: for=...;proto=...`` (parsed by aiohttp): the first untrusted hop."""
        overrides: dict[str, Any] = {}
        for element in reversed(request.forwarded):
            client = _address(element.get("for"))
            if client is None:  # an obfuscated or "unknown" node: it cannot be told apart, stop here
                break
            overrides = {"remote": str(client)}
            if element.get("proto"):
                overrides["scheme"] = element["proto"]
            if element.get("host"):
                overrides["host"] = element["host"]
            if not self.trusts(str(client)):
                break
        return request.clone(**overrides) if overrides else request


FORWARDED_X = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")


def _one_header_each(request: web.Request) -> web.Request:
    """Several ``X-Forwarded-*`` lines joined into one, in order (RFC 9110 5.3: the same list).

    HAProxy's ``option forwardfor`` adds its own line after the one a client sent; aiohttp-remotes
    refuses a request with two (400), which would refuse every client that sends the header itself.
    """
    repeated = [name for name in FORWARDED_X if len(request.headers.getall(name, [])) > 1]
    if not repeated:
        return request
    headers = CIMultiDict(request.headers)
    for name in repeated:
        headers[name] = ", ".join(request.headers.getall(name))
    return request.clone(headers=headers)


def _peer(request: web.Request) -> str | None:
    """The TCP peer's address, whatever ``request.remote`` says."""
    if request.transport is None:
        return None
    peer = request.transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return None  # a unix socket

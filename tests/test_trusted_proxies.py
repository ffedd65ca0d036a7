"""The client's address behind a trusted proxy (X-Forwarded-For / Forwarded), and only behind one.

A small aiohttp app with the middleware answers what it sees; clients connect
over real TCP from chosen loopback addresses (127.0.0.1 plays the proxy).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from realtime.settings import parse_networks
from realtime.web.proxies import TrustedProxies

PROXY = "127.0.0.1"
CLIENT = "127.0.0.2"  # connects directly: not a trusted proxy


async def _seen(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote, "scheme": request.scheme, "host": request.host})


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application(middlewares=[TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"]).middleware])
    app.router.add_get("/", _seen)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def _get(base: str, source: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http, http.get(base, headers=headers) as r:
        return r.status, (await r.json() if r.status == 200 else {})


async def test_a_trusted_proxy_names_the_client(base: str) -> None:
    status, seen = await _get(base, PROXY, {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200 and seen["remote"] == "203.0.113.7"


async def test_no_header_from_a_trusted_proxy_leaves_the_peer(base: str) -> None:
    status, seen = await _get(base, PROXY, {})
    assert status == 200 and seen["remote"] == PROXY


async def test_an_untrusted_peer_cannot_name_itself(base: str) -> None:
    status, seen = await _get(
        base,
        CLIENT,
        {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "Forwarded": "for=1.2.3.4"},
    )
    assert status == 200 and seen == {"remote": CLIENT, "scheme": "http", "host": base[7:-1]}


async def test_the_first_untrusted_hop_from_the_right_is_the_client(base: str) -> None:
    # the client forged "198.51.100.66" at the left; two trusted proxies (10.1.2.3, then the peer) appended
    status, seen = await _get(base, PROXY, {"X-Forwarded-For": "198.51.100.66, 203.0.113.7, 10.1.2.3"})
    assert status == 200 and seen["remote"] == "203.0.113.7"


async def test_header_lines_a_proxy_added_are_one_list(base: str) -> None:
    # HAProxy adds its own X-Forwarded-For line after the client's: the two are one list, in order
    connector = aiohttp.TCPConnector(local_addr=(PROXY, 0))
    headers = CIMultiDict([("X-Forwarded-For", "198.51.100.66"), ("X-Forwarded-For", "203.0.113.7")])
    async with aiohttp.ClientSession(connector=connector) as http, http.get(base, headers=headers) as r:
        assert r.status == 200 and (await r.json())["remote"] == "203.0.113.7"


async def test_scheme_and_host_follow_a_trusted_proxy(base: str) -> None:
    # behind a TLS-terminating proxy the page's origin is https://public.example: the server must see that
    status, seen = await _get(
        base,
        PROXY,
        {
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "public.example",
        },
    )
    assert status == 200 and seen == {"remote": "203.0.113.7", "scheme": "https", "host": "public.example"}


async def test_rfc7239_forwarded(base: str) -> None:
    status, seen = await _get(base, PROXY, {"Forwarded": 'for=203.0.113.9;proto=https, for="10.9.8.7"'})
    assert seen["remote"] == "203.0.113.9" and seen["scheme"] == "https"
    status, seen = await _get(base, PROXY, {"Forwarded": 'for="[2001:db8::5]"'})
    assert status == 200 and seen["remote"] == "2001:db8::5"


async def test_a_malformed_header_from_a_trusted_proxy_is_refused(base: str) -> None:
    status, _ = await _get(base, PROXY, {"X-Forwarded-For": "not-an-address"})
    assert status == 400


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", " 127.0.0.1 ", "fd00::/8", "192.168.1.7/24"])] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "fd00::/8",
        "192.168.1.0/24",
    ]
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP address or CIDR network"):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError, match=r"'proxy\.local'"):
        parse_networks(["proxy.local"])

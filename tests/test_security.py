"""Access control, origins, rate limits, OpenAPI and log hygiene against a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client
from engines.splat.synthetic import write_synthetic_avatar
from realtime.web.security import RateLimiter, SecretFilter, retry_after

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path: Path = tmp_path_factory.mktemp("avatar") / "synthetic.safetensors"
    write_synthetic_avatar(path)
    srv = ServerProcess(
        "--avatar", str(path), "--size", "128", "--capacity", "8", "--token", TOKEN,
        "--cors-origins", "https://allowed.example",
    )  # fmt: skip
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def test_token_required_on_api_but_not_on_health(server: ServerProcess) -> None:
    assert request(server.base + "/healthz")[0] == 200
    assert request(server.base + "/openapi.json")[0] == 200
    assert request(server.base + "/api/sessions")[0] == 401
    assert (
        request(server.base + "/api/sessions", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})[0]
        == 403
    )
    assert request(server.base + "/metrics")[0] == 401
    assert request(server.base + "/api/sessions", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, body = request(server.base + "/api/offer", "POST", b'{"sdp": "v=0", "type": "offer"}')
    assert status == 401 and "token" in body["error"]


def test_session_token_scopes_session_routes(server: ServerProcess) -> None:
    async def run() -> None:
        a = Client(server.base, api_token=TOKEN)
        b = Client(server.base, api_token=TOKEN)
        try:
            await a.connect()
            await b.connect()
            await a.wait_video(3)
            async with aiohttp.ClientSession() as http:
                say = f"{server.base}/api/sessions/{a.session_id}/say"
                # b's token cannot drive a's avatar; a's own token and the server token can
                async with http.post(say, json={"text": "hi"}, headers=b.auth) as r:
                    assert r.status == 403
                async with http.post(say, json={"text": "hi"}) as r:
                    assert r.status == 401
                async with http.post(
                    f"{server.base}/api/sessions/{a.session_id}/interrupt", headers=a.auth
                ) as r:
                    assert r.status == 200
                async with http.post(
                    f"{server.base}/api/sessions/{a.session_id}/interrupt",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as r:
                    assert r.status == 200
                # the websocket takes the token as a query parameter (browsers cannot set headers there)
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect(f"{server.base}/api/sessions/{a.session_id}/events?token={b.token}")
                ws = await http.ws_connect(
                    f"{server.base}/api/sessions/{a.session_id}/events?token={a.token}"
                )
                first = await ws.receive_json(timeout=10)
                assert first["type"] == "state"
                # junk and floods on the websocket: an error event, then a policy close; the session lives on
                await ws.send_str("not json at all")
                # other events (stats, the interrupts above, emotion) may come first; the error must come
                seen = [(await ws.receive_json(timeout=10))["type"]]
                while seen[-1] != "error" and len(seen) < 30:
                    seen.append((await ws.receive_json(timeout=10))["type"])
                assert seen[-1] == "error", seen
                for _ in range(60):
                    await ws.send_str('{"type": "nonsense"}')
                for _ in range(100):
                    msg = await ws.receive(timeout=10)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
                assert ws.closed or msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            n = len(a.rx.video_t)
            await asyncio.sleep(1.0)
            assert len(a.rx.video_t) > n + 15
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_foreign_origin_is_refused_and_allowlisted_origin_gets_cors(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = request(server.base + "/api/sessions", headers={**auth, "Origin": "https://evil.example"})
    assert status == 403 and "origin" in body["error"]
    req = urllib.request.Request(
        server.base + "/api/sessions", headers={**auth, "Origin": "https://allowed.example"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "https://allowed.example"


def test_offer_rate_limit_per_address(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    statuses = [
        request(server.base + "/api/offer", "POST", b'{"sdp": "x", "type": "offer"}', auth)[0]
        for _ in range(30)
    ]
    assert 429 in statuses  # default 20 per minute, bursts of 5
    assert statuses[0] == 400  # the first ones are answered (and refused as bad SDP)


def test_openapi_describes_exactly_the_routes(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from engines.library.store import AvatarLibrary
    from realtime.media.avatars import AvatarSet
    from realtime.settings import Settings
    from realtime.web.openapi import openapi_spec
    from realtime.web.server import create_app

    class _Manager:  # create_app only registers routes; an avatar library (no avatar loaded) adds its routes
        def __init__(self) -> None:
            self.sessions: dict[str, Any] = {}
            self.engine = SimpleNamespace(avatars=AvatarSet(AvatarLibrary(tmp_path), (64, 64), "cpu"))
            self.voices = None

    app = create_app(Settings(), _Manager())  # type: ignore[arg-type]
    routes = set()
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None or "prefix" in info:
            continue
        routes.add((route.method.lower(), path))
    spec = openapi_spec()
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == described


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.take("a", now=0.0) == 0 and limiter.take("a", now=0.0) == 0
    wait = limiter.take("a", now=0.0)
    assert 0.9 < wait <= 1.0
    assert limiter.take("a", now=1.01) == 0
    assert limiter.take("b", now=0.0) == 0  # per key


@pytest.mark.parametrize(
    ("per_minute", "burst", "elapsed"),
    [(20, 1, 0.3), (4, 1, 0.0), (4, 1, 14.2), (60, 2, 0.5), (7, 3, 1.0)],
)
def test_a_client_that_waits_as_told_is_served(per_minute: int, burst: int, elapsed: float) -> None:
    """Retry-After is the limiter's wait rounded up: waiting that long always finds a token.
    (Rounded down, 20/min after 0.3 s said "2" for a 2.7 s wait and the client was refused again.)"""
    limiter = RateLimiter(per_minute=per_minute, burst=burst)
    for _ in range(burst):
        assert limiter.take("c", now=0.0) == 0
    wait = limiter.take("c", now=elapsed)
    assert wait > 0
    told = int(retry_after(wait))
    assert told >= 1 and told - 1 < wait <= told
    assert limiter.take("c", now=elapsed + told) == 0


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (14.6, "15")]
)
def test_retry_after_rounds_up(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header


def test_secret_filter_masks_values(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("splatcast.test.secret")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(SecretFilter([TOKEN, None]))
    log.addHandler(handler)
    try:
        log.warning("calling with key %s and header Bearer %s", TOKEN, TOKEN)
    finally:
        log.removeHandler(handler)
    assert seen and TOKEN not in seen[0] and "***" in seen[0]


def test_public_bind_without_token_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "realtime.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "without a token" in proc.stderr

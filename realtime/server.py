"""The HTTP server: the browser client at ``/`` and ``/healthz``.

The WebRTC session API (``/api/offer`` and the session routes) lands with the
real-time server work; this module already owns the app, its start-up and its
shutdown so that everything else plugs into one place.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from importlib import resources

from aiohttp import web

from realtime.settings import Settings

logger = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)


async def _index(request: web.Request) -> web.Response:
    page = resources.files("realtime").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html")


async def _healthz(request: web.Request) -> web.Response:
    # sessions/capacity become real with the session manager and scheduler
    return web.json_response({"status": "ok", "sessions": 0, "capacity": 0})


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[SETTINGS_KEY] = settings
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static/", resources.files("realtime").joinpath("static"))  # type: ignore[arg-type]
    return app


async def run(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{host}:{settings.port}/"
    logger.info("server: listening on %s:%s", settings.host, settings.port)
    print(f"splatcast is serving the avatar at {url}  (Ctrl+C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        logger.info("server: shutting down")
        await runner.cleanup()


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        asyncio.run(run(settings))
    except OSError as exc:
        logger.error("server: cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    return 0

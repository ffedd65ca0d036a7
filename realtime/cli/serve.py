"""``splatcast serve``: the avatar server (:mod:`realtime.web.server`) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging

from realtime.settings import Settings
from realtime.web.server import run

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    if not is_loopback(settings.host) and settings.token is None and not settings.insecure:
        logger.error(
            "server: refusing to listen on %s without a token: set SPLATCAST_TOKEN (or --token), "
            "or pass --insecure if something in front of this server does authentication",
            settings.host,
        )
        return 2
    from realtime.web.memory import tune_allocator

    tune_allocator()  # before models and threads allocate: see realtime/web/memory.py
    try:
        asyncio.run(run(settings))
    except OSError as exc:
        logger.error("server: cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    return 0

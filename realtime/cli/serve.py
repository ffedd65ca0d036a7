"""``splatcast serve``: the avatar server (:mod:`realtime.web.server`) until SIGINT/SIGTERM.

:func:`run_server` is how ``serve`` and ``bot`` both run their shell
(:mod:`realtime.web.shell`): allocator tuned first, clear exit codes on a
missing asset (2) or a port it cannot listen on (1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from realtime.settings import Settings

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def run_server(
    command: str, settings: Settings, main: Callable[[Settings], Coroutine[Any, Any, None]]
) -> int:
    """Run ``main(settings)`` (a shell's serve loop) until it returns; the process exit code."""
    from engines.assets import AssetMissingError
    from realtime.media.cpu_priority import single_threaded_blas
    from realtime.web.memory import tune_allocator

    tune_allocator()  # before models and threads allocate: see realtime/web/memory.py
    single_threaded_blas()  # no spinning BLAS helper beside the calls (realtime/media/cpu_priority.py)
    try:
        asyncio.run(main(settings))
    except AssetMissingError as exc:
        logger.error("%s: %s", command, exc)
        return 2
    except OSError as exc:
        logger.error("%s: cannot listen on %s:%s: %s", command, settings.host, settings.port, exc)
        return 1
    return 0


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    if not is_loopback(settings.host) and settings.token is None and not settings.insecure:
        logger.error(
            "server: refusing to listen on %s without a token: set SPLATCAST_TOKEN (or --token), "
            "or pass --insecure if something in front of this server does authentication",
            settings.host,
        )
        return 2
    from realtime.web.server import run

    return run_server("serve", settings, run)

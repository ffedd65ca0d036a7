"""Pipecat logs through loguru; this sends those records into stdlib ``logging``.

Without it, Pipecat prints every DEBUG line (transcripts, TTS text, endpoint
error texts) straight to stderr, whatever ``--log-level`` says, and past the
CLI's secret filter. After :func:`route_loguru_to_logging` each loguru record
becomes a stdlib record on the logger of the same name (``pipecat.…``), so the
CLI's level, handlers and filters apply to it like to ours.

Call it once, from the CLI's logging set-up (it changes loguru's global
handlers).
"""

from __future__ import annotations

import logging
from typing import Any

# loguru's level numbers match stdlib's, plus TRACE (5) and SUCCESS (25)
_TRACE = 5


def _forward(message: Any) -> None:
    record = message.record
    exc = record["exception"]
    exc_info = (exc.type, exc.value, exc.traceback) if exc is not None and exc.type is not None else None
    logging.getLogger(record["name"] or "pipecat").log(
        max(_TRACE, int(record["level"].no)), "%s", record["message"], exc_info=exc_info
    )


def route_loguru_to_logging(replace_default: bool = True, level: int | None = None) -> int:
    """Forward loguru records at ``level`` and above (default: the stdlib level of ``pipecat``).

    replace_default: also remove loguru's own stderr handler (what the CLI
    wants); tests keep it. Returns the loguru handler id (for ``logger.remove``).
    """
    from loguru import logger as loguru_logger

    if replace_default:
        loguru_logger.remove()
    if level is None:
        level = logging.getLogger("pipecat").getEffectiveLevel()
    return int(loguru_logger.add(_forward, level=max(_TRACE, level), format="{message}"))

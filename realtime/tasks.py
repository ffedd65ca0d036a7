"""Background tasks whose ending somebody observes.

:func:`spawn` creates a task and :func:`watch` attaches a done-callback to one:
a task that ends with an exception (not a cancellation) is logged with its
traceback and handed to ``on_error``, which ends what depends on it (a session
closes with an error event; a Pipecat service pushes a fatal ``ErrorFrame``).
Nothing is swallowed: an expected ending (cancellation) is the only quiet one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
OnError = Callable[[BaseException], None]


def watch(task: asyncio.Task[T], what: str, on_error: OnError | None = None) -> asyncio.Task[T]:
    """Log ``task``'s failure (with ``what`` it was) and call ``on_error`` with it; returns the task."""

    def done(t: asyncio.Task[T]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            return
        logger.error("%s stopped on an unexpected error", what, exc_info=exc)
        if on_error is not None:
            try:
                on_error(exc)
            except Exception:
                logger.exception("%s: its error handler failed too", what)

    task.add_done_callback(done)
    return task


def spawn(coro: Coroutine[Any, Any, T], what: str, on_error: OnError | None = None) -> asyncio.Task[T]:
    """``asyncio.create_task(coro)``, watched (see :func:`watch`); ``what`` names it in logs and the task."""
    return watch(asyncio.get_running_loop().create_task(coro, name=what), what, on_error)

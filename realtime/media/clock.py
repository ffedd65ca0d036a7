"""The one monotonic clock the real-time code paces against (absolute schedules, never sleep(period))."""

from __future__ import annotations

import asyncio
import time


async def sleep_until(when: float) -> None:
    """Sleep until monotonic time ``when`` (returns at once when it has passed)."""
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)

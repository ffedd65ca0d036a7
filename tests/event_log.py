"""Listeners that keep events as their JSON (what the events websocket sends), for assertions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from realtime.events import Event


def record(events: list[dict[str, Any]]) -> Callable[[Event], None]:
    """A listener that appends each event's ``to_json()`` to ``events``."""
    return lambda event: events.append(event.to_json())

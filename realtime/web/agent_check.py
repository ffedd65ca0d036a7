"""HAProxy's agent check: a TCP port that answers each connection with one line about free capacity.

HAProxy (``server ... agent-check agent-port P``) connects every
``agent-inter`` and reads one line (HAProxy configuration manual, 5.2
"agent-check"). This replica answers:

* ``up ready 75%`` while it has room: the weight is the share of its capacity
  still free, so new sessions go where capacity is free. ``ready`` cancels a
  ``drain`` this agent reported before (``up`` alone would not: only the agent
  that drained a server can bring it back).
* ``drain`` when it is full or shutting down (SIGTERM): HAProxy sends it no
  new sessions, but requests that stick to one of its sessions still arrive.

The line is computed from a :class:`Load` snapshot taken when HAProxy
connects; nothing here keeps state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Load:
    """What the replica holds now: sessions, how many it can hold at full frame rate, whether it drains."""

    sessions: int
    capacity: int  # sessions this replica holds at 25 FPS (measured per frame, or --capacity)
    draining: bool

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.sessions)


def agent_line(load: Load) -> str:
    """The agent-check answer for ``load``, newline included."""
    if load.draining or load.capacity < 1 or load.free == 0:
        return "drain\n"
    percent = max(1, round(100 * load.free / load.capacity))
    return f"up ready {percent}%\n"


class AgentCheckServer:
    """Answers HAProxy's agent check on a TCP port: one line per connection, then close."""

    def __init__(self, load: Callable[[], Load]) -> None:
        self._load = load
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._answer, host, port)
        logger.info("agent-check: answering HAProxy on %s:%s", host, port)

    @property
    def port(self) -> int | None:
        """The port bound (useful when started on port 0)."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = agent_line(self._load())
            writer.write(line.encode("ascii"))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            pass  # HAProxy went away or stopped reading: it asks again next interval
        except Exception:
            logger.exception("agent-check: could not answer")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

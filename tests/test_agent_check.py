"""HAProxy's agent check: the line a replica answers, and the TCP responder that answers it."""

from __future__ import annotations

import asyncio

import pytest

from realtime.media.scheduler import Scheduler
from realtime.web.agent_check import AgentCheckServer, Load, agent_line


@pytest.mark.parametrize(
    ("load", "line"),
    [
        (Load(sessions=0, capacity=4, draining=False), "up ready 100%\n"),  # empty: full weight
        (Load(sessions=1, capacity=4, draining=False), "up ready 75%\n"),  # weight = share still free
        (Load(sessions=2, capacity=3, draining=False), "up ready 33%\n"),
        (Load(sessions=199, capacity=200, draining=False), "up ready 1%\n"),  # rounds to 0: still 1 %
        (Load(sessions=4, capacity=4, draining=False), "drain\n"),  # at capacity: no new sessions
        (Load(sessions=5, capacity=4, draining=False), "drain\n"),  # over it (the measured cost rose)
        (Load(sessions=0, capacity=4, draining=True), "drain\n"),  # SIGTERM: drains even when empty
        (Load(sessions=1, capacity=4, draining=True), "drain\n"),
        (Load(sessions=0, capacity=0, draining=False), "drain\n"),  # nothing fits at all
    ],
)
def test_agent_line(load: Load, line: str) -> None:
    assert agent_line(load) == line


def test_agent_line_from_the_schedulers_measured_cost() -> None:
    """No --capacity: the capacity is what the measured per-frame cost leaves room for at 25 FPS."""
    scheduler = Scheduler(fps=25, workers=1, headroom=0.8)  # budget 40 ms x 0.8 = 32 ms of work a frame
    try:
        # nothing measured yet: admit and learn (room for one more than the sessions it has)
        assert agent_line(Load(0, scheduler.capacity(), False)) == "up ready 100%\n"
        scheduler.timings.observe("encode", 4.0)
        scheduler._learn_cost(0, 12.0)  # render 12 ms + encode 4 ms = 16 ms a frame: 2 sessions fit
        assert scheduler.capacity() == 2
        assert agent_line(Load(1, scheduler.capacity(), False)) == "up ready 50%\n"
        assert agent_line(Load(2, scheduler.capacity(), False)) == "drain\n"
        for _ in range(60):  # frames got cheaper (a lighter avatar): ~7 ms a frame, 4 sessions fit
            scheduler._learn_cost(0, 3.0)
        assert scheduler.capacity() == 4
        assert agent_line(Load(2, scheduler.capacity(), False)) == "up ready 50%\n"
    finally:
        scheduler.close()


async def _ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(), 5)  # the agent closes after its line
    finally:
        writer.close()


async def test_agent_server_answers_each_connection_with_the_current_load() -> None:
    load = Load(sessions=0, capacity=2, draining=False)
    server = AgentCheckServer(lambda: load)
    await server.start("127.0.0.1", 0)
    port = server.port
    assert port is not None
    try:
        assert await _ask(port) == b"up ready 100%\n"
        load = Load(sessions=1, capacity=2, draining=False)
        assert await _ask(port) == b"up ready 50%\n"
        load = Load(sessions=2, capacity=2, draining=False)
        assert await _ask(port) == b"drain\n"
        load = Load(sessions=1, capacity=2, draining=False)  # a session ended: back in rotation
        assert await _ask(port) == b"up ready 50%\n"
        answers = await asyncio.gather(*(_ask(port) for _ in range(20)))  # many balancers at once
        assert set(answers) == {b"up ready 50%\n"}
    finally:
        await server.close()
    with pytest.raises(OSError):  # closed with the server: HAProxy's health check then marks it down
        await asyncio.open_connection("127.0.0.1", port)


async def test_agent_server_survives_a_failing_load_source() -> None:
    calls = 0

    def load() -> Load:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return Load(0, 1, False)

    server = AgentCheckServer(load)
    await server.start("127.0.0.1", 0)
    try:
        assert server.port is not None
        assert await _ask(server.port) == b""  # closed without a line: HAProxy keeps the last state
        assert await _ask(server.port) == b"up ready 100%\n"
    finally:
        await server.close()

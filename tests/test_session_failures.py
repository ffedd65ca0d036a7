"""A session whose background work fails ends, and says why on its events: nothing fails silently.

In process: a real engine (a small synthetic avatar), a real SessionManager and
a real aiortc offer; the session's frame pacer or its conversation start is
made to fail, and the test reads the events a websocket subscriber would get.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from engines.splat.synthetic import write_synthetic_avatar
from realtime.events import Closed, Error, Event
from realtime.media.engine import Engine
from realtime.media.stream import AvatarStream, FrameJob
from realtime.settings import Settings
from realtime.web.sessions import SessionManager

SIZE = 64


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("avatar") / "synthetic.safetensors"
    write_synthetic_avatar(path)
    eng = Engine.load(Settings(avatar=path, size=SIZE, capacity=4), warmup=False)
    yield eng
    eng.close()


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _events_until_closed(queue: asyncio.Queue[Event], timeout: float = 20.0) -> list[Event]:
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while not seen or not isinstance(seen[-1], Closed):
        seen.append(await asyncio.wait_for(queue.get(), timeout=max(0.1, deadline - time.monotonic())))
    return seen


async def test_a_failed_frame_pacer_closes_its_session_with_an_error_event(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = SessionManager(engine)
    client, sdp = await _offer()
    try:
        session, _ = await manager.create(sdp, "offer")
        assert engine.scheduler.sessions == 1
        queue = session.subscribe()

        def broken(_stream: AvatarStream) -> FrameJob:
            raise RuntimeError("motion state corrupted")

        monkeypatch.setattr(AvatarStream, "next_frame_job", broken)
        session.pacer.start(time.monotonic())  # what the tracks' first recv() does
        events = await _events_until_closed(queue)
        errors = [e for e in events if isinstance(e, Error)]
        assert len(errors) == 1 and errors[0].stage == "avatar"
        assert "frame pacer stopped: motion state corrupted" in errors[0].message
        await asyncio.wait_for(session.closed.wait(), 10)
        assert session.id not in manager.sessions
        assert engine.scheduler.sessions == 0  # its lease went back with it
    finally:
        await manager.close_all()
        await client.close()


class _FailingTalker:
    """A conversation loop whose start fails (e.g. a model that cannot load)."""

    async def start(self) -> None:
        raise RuntimeError("speech models missing")

    async def stop(self) -> None:
        pass

    async def say(self, text: str) -> None:
        pass

    async def interrupt(self) -> None:
        pass

    async def consume_track(self, track: Any) -> None:
        pass


async def test_a_failed_conversation_start_is_reported_and_the_session_stays_up(engine: Engine) -> None:
    manager = SessionManager(engine, talker_factory=lambda _stream, _publish: _FailingTalker())
    client, sdp = await _offer()
    try:
        session, _ = await manager.create(sdp, "offer")
        queue = session.subscribe()
        seen: list[Event] = []
        deadline = time.monotonic() + 10
        while not any(isinstance(e, Error) for e in seen) and time.monotonic() < deadline:
            seen.append(await asyncio.wait_for(queue.get(), timeout=max(0.1, deadline - time.monotonic())))
        errors = [e for e in seen if isinstance(e, Error)]
        assert errors and errors[0].stage == "pipeline" and "speech models missing" in errors[0].message
        assert session.id in manager.sessions  # the face still streams; `say` answers 503 with the reason
    finally:
        await manager.close_all()
        await client.close()

"""Sessions leave nothing behind, and a session whose ICE never connects is ended and freed.

A real ``splatcast serve`` subprocess (synthetic avatar at 160 px; the real
conversation loop) with ``SPLATCAST_CONNECT_TIMEOUT_S=4`` so a session that
never connects is ended quickly. What is measured comes from the server's own
``/metrics``: ``splatcast_asyncio_tasks``, ``splatcast_threads`` (less
``splatcast_executor_threads``, asyncio's default-executor pool, which grows on
demand and keeps idle workers: a bounded pool, not a leak),
``splatcast_peer_connections`` (peer connections made and not yet closed, kept
weakly so a leaked one is counted) and ``splatcast_sessions``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from benchmarks.metrics_scrape import parse_metrics
from benchmarks.server_process import ServerProcess, free_port
from benchmarks.webrtc_client import Client
from engines.splat.synthetic import write_synthetic_avatar

CONNECT_TIMEOUT_S = 4
# a client that closed is noticed at once (DTLS close); one that was killed when aioice's consent checks
# fail (~30 s after its last answer; measured 32 s here)
SETTLE_S = 60.0
KILLED_CLIENT = """
import asyncio, sys
from benchmarks.webrtc_client import Client

async def main():
    c = Client(sys.argv[1])
    await c.connect()
    await c.wait_video(5)
    print("connected", c.session_id, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_process_gauges_read_this_process() -> None:
    import logging
    import threading

    import psutil

    from realtime.web.metrics import ErrorCounter, process_gauges, resident_memory_bytes

    rss = psutil.Process().memory_info().rss
    assert resident_memory_bytes() == pytest.approx(rss, rel=0.1)
    counter = ErrorCounter()
    log = logging.getLogger("splatcast.test.hygiene")
    log.addHandler(counter)
    try:
        log.warning("not an error")
        log.error("one")
        log.critical("two")
    finally:
        log.removeHandler(counter)
    assert counter.count == 2
    g = parse_metrics("\n".join(process_gauges(tasks=7, peer_connections=3, errors=counter.count))).gauges
    assert g["splatcast_asyncio_tasks"] == 7 and g["splatcast_peer_connections"] == 3
    assert g["splatcast_errors_total"] == 2 and g["splatcast_threads"] == threading.active_count()
    assert g["process_resident_memory_bytes"] > 10e6


class _Owner:
    """Stands in for a session's frame clock (the owner of render jobs)."""


class _FastRenderer:
    """Stands in for a FrameRenderer where only what the worker keeps referenced matters."""

    max_batch = 1

    def render(self, params: np.ndarray, level: int) -> np.ndarray:
        return np.zeros((len(params), 16, 16, 3), np.uint8)  # [B, H, W, 3]

    def to_video_frame(self, image: np.ndarray) -> Any:
        from av import VideoFrame

        return VideoFrame.from_ndarray(image, format="rgb24")

    def render_frames(self, params: np.ndarray, level: int) -> list[Any]:
        return [self.to_video_frame(image) for image in self.render(params, level)]


async def test_render_worker_keeps_nothing_of_its_last_job_while_it_waits() -> None:
    """The worker thread's locals held the last batch (its owner, params, frame) until the next job
    came, so the last session stayed alive on an idle server (found with the soak)."""
    import gc
    import weakref

    from realtime.media.scheduler import Scheduler

    sched = Scheduler(fps=25)
    try:
        owner, renderer = _Owner(), _FastRenderer()
        params = np.zeros((1, 4), np.float32)  # [B, C]
        fut = sched.submit(renderer, params, time.monotonic() + 5, 0, owner=owner)  # type: ignore[arg-type]
        assert await asyncio.wait_for(fut, timeout=5) is not None
        gone = weakref.ref(owner), weakref.ref(params)
        del owner, params, fut
        await asyncio.sleep(0.2)  # the worker is back waiting for work
        gc.collect()
        assert gone[0]() is None and gone[1]() is None
    finally:
        sched.close()


class _NeverConnected:
    """Stands in for a Session whose ICE never connected (what the reaper looks at, and close())."""

    def __init__(self) -> None:
        self.pc = SimpleNamespace(connectionState="checking")
        self.created = self.last_activity = time.monotonic()
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_reaper_ends_a_never_connected_session_and_keeps_no_reference_to_it() -> None:
    """The reaper's loop variable held the last session it checked while it slept, so a closed
    session stayed alive on an idle server (found with the soak)."""
    import gc
    import weakref

    from realtime.web.sessions import SessionManager

    settings = SimpleNamespace(
        idle_timeout_s=600, session_max_s=3600, max_sessions=None, connect_timeout_s=0.3
    )
    engine = SimpleNamespace(settings=settings, scheduler=SimpleNamespace(sessions=0))
    manager = SessionManager(engine)  # type: ignore[arg-type]
    ghost = _NeverConnected()
    manager.sessions["ghost"] = ghost  # type: ignore[assignment]
    manager.start()
    try:
        await asyncio.sleep(0.1)
        assert "ghost" in manager.sessions  # younger than connect_timeout_s: left alone
        deadline = time.monotonic() + 5
        while manager.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not manager.sessions and ghost.closed
        gone = weakref.ref(ghost)
        del ghost
        await asyncio.sleep(0.3)  # the reaper sleeps again
        gc.collect()
        assert gone() is None
    finally:
        await manager.close_all()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path: Path = tmp_path_factory.mktemp("avatar") / "synthetic.safetensors"
    write_synthetic_avatar(path)
    env = {
        **os.environ,
        "SPLATCAST_OFFER_RATE_PER_MINUTE": "600",
        "SPLATCAST_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
    }
    srv = ServerProcess("--avatar", str(path), "--size", "160", "--capacity", "4", env=env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])


def gauges(srv: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{srv.base}/metrics", timeout=10) as resp:
        g = parse_metrics(resp.read().decode()).gauges
    g["own_threads"] = g["splatcast_threads"] - g["splatcast_executor_threads"]
    return g


async def settle(srv: ServerProcess, timeout: float = SETTLE_S) -> dict[str, float]:
    """Wait until the server holds no session and no open peer connection, then read the idle gauges."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        g = gauges(srv)
        if g["splatcast_sessions"] == 0 and g["splatcast_peer_connections"] == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.5)  # the closing tasks finish, and the server collects the closed sessions (1 s on)
    return gauges(srv)


async def _post_offer(base: str, sdp: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/offer", json={"sdp": sdp, "type": "offer"}) as resp:
            return resp.status, await resp.json()


async def _offer_sdp(*kinds: str) -> str:
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def _talk_and_leave(srv: ServerProcess, delete: bool) -> Client:
    c = Client(srv.base)
    try:
        await c.connect()
        c.watch_events()  # a websocket subscriber too: it must be dropped on close
        await c.wait_video(5)
        assert (await c.post("say", {"text": "Hello there, I will not be here for long."}))[0] == 202
        await asyncio.sleep(0.8)  # mid-sentence
        if delete:
            assert (await c.post("interrupt"))[0] == 200
            assert (await c.post("emotion", {"name": "happy", "intensity": 0.5}))[0] == 200
    finally:
        await c.close(delete=delete)
    return c


async def test_sessions_leave_no_tasks_threads_or_peer_connections_behind(server: ServerProcess) -> None:
    srv = server
    await _talk_and_leave(srv, delete=True)  # priming: lazily started pools exist before the baseline
    base = await settle(srv)
    assert base["splatcast_sessions"] == 0 and base["splatcast_peer_connections"] == 0

    # a client process killed while connected: no DELETE, no DTLS close, it just stops answering
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, srv.base], stdout=subprocess.PIPE, text=True
    )
    try:
        assert killed.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(killed.stdout.readline), timeout=60)
        assert line.startswith("connected"), line
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    assert gauges(srv)["splatcast_sessions"] == 1  # freed later, while the cases below run

    # two at once, then: a normal leave (DELETE), a vanishing client (no DELETE), failed offers
    a, b = Client(srv.base), Client(srv.base)
    try:
        await a.connect()
        await b.connect()
        await a.wait_video(5)
        await b.wait_video(5)
        busy = gauges(srv)
        assert busy["splatcast_sessions"] == 3 and busy["splatcast_peer_connections"] == 3
        assert busy["splatcast_asyncio_tasks"] > base["splatcast_asyncio_tasks"]  # the gauge sees sessions
    finally:
        await a.close()
        await b.close(delete=False)
    await _talk_and_leave(srv, delete=True)
    await _talk_and_leave(srv, delete=False)
    # an offer without video: a session (and its peer connection) is made, then refused and freed
    status, body = await _post_offer(srv.base, await _offer_sdp("audio"))
    assert status == 400 and "video" in body["error"]
    # an offer that parses but that aiortc refuses (no ICE credentials)
    broken = re.sub(r"a=ice-(ufrag|pwd):.*\r\n", "", await _offer_sdp("video", "audio"))
    status, body = await _post_offer(srv.base, broken)
    assert status == 400, body

    end = await settle(srv)
    assert end["splatcast_sessions"] == 0
    assert end["splatcast_peer_connections"] == 0
    assert end["splatcast_asyncio_tasks"] == base["splatcast_asyncio_tasks"]
    assert end["own_threads"] == base["own_threads"]
    assert srv.health()["sessions"] == 0
    with urllib.request.urlopen(f"{srv.base}/api/sessions", timeout=10) as resp:
        assert resp.read().strip() == b"[]"


async def test_session_whose_ice_never_connects_is_ended_and_others_keep_streaming(
    server: ServerProcess,
) -> None:
    srv = server
    keeper = Client(srv.base)
    try:
        await keeper.connect()
        await keeper.wait_video(5)
        # a ghost: its candidates point at a closed loopback port, and nothing answers there
        dead_port = free_port()  # bound, then closed again: nothing listens on it
        sdp = re.sub(
            r"(a=candidate:\S+ \d+ udp \d+ )\S+ \d+ (typ \w+).*",
            rf"\g<1>127.0.0.1 {dead_port} \g<2>",
            await _offer_sdp("video", "audio"),
        )
        assert f"127.0.0.1 {dead_port} typ host" in sdp
        t0 = time.monotonic()
        status, body = await _post_offer(srv.base, sdp)
        assert status == 200, body
        ghost = body["session_id"]
        assert srv.health()["sessions"] == 2
        deadline = t0 + CONNECT_TIMEOUT_S + 15.0
        while time.monotonic() < deadline:
            g = gauges(srv)
            if g["splatcast_sessions"] == 1 and g["splatcast_peer_connections"] == 1:
                break
            await asyncio.sleep(0.25)
        gone_s = time.monotonic() - t0
        assert g["splatcast_sessions"] == 1, f"the ghost session was not ended after {gone_s:.1f} s"
        assert g["splatcast_peer_connections"] == 1  # its peer connection is closed, the keeper's is not
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{srv.base}/api/sessions") as resp:
                ids = [s["id"] for s in await resp.json()]
        assert ghost not in ids and ids == [keeper.session_id]
        # the keeper streamed all along and still does (no stall; its frame rate is the benchmarks' business,
        # and this box may be busy with other work)
        seen = [t for t in keeper.rx.video_t if t >= t0]
        assert seen and seen[0] - t0 < 1.0 and float(np.max(np.diff(seen))) < 1.0
        n = len(keeper.rx.video_t)
        await asyncio.sleep(1.0)
        assert len(keeper.rx.video_t) >= n + 5
    finally:
        await keeper.close()
    await settle(srv)

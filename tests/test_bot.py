"""``splatcast bot`` end to end: the real subprocess, a real aiortc peer speaking SmallWebRTC's signalling.

The client does what Pipecat's prebuilt browser client does (``POST /start``,
then the offer to ``/sessions/{id}/api/offer``, audio transceiver first with a
microphone track), and records every frame and audio packet that arrives. The
bot greets on connect, so speech arrives without any user turn.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from aiortc.mediastreams import AudioStreamTrack

from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client, fps_between
from engines.splat.synthetic import write_synthetic_avatar

pytestmark = pytest.mark.slow

SIZE = 96
VIDEO_CLOCK = 90_000


@pytest.fixture(scope="module")
def bot(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, tuple[int, int, int, int]]]:
    path = tmp_path_factory.mktemp("bot") / "synthetic.safetensors"
    x0, y0, x1, y1 = write_synthetic_avatar(path)
    box = (int(x0 * SIZE), int(y0 * SIZE), math.ceil(x1 * SIZE), math.ceil(y1 * SIZE))
    server = ServerProcess("--avatar", str(path), "--size", str(SIZE), command="bot")
    try:
        server.wait_ready()
        yield server, box
    finally:
        server.stop()


async def test_bot_streams_the_face_at_25fps_over_smallwebrtc(
    bot: tuple[ServerProcess, tuple[int, int, int, int]],
) -> None:
    server, box = bot
    client = Client(server.base, mouth_box=box, protocol="smallwebrtc", mic=AudioStreamTrack())
    try:
        await client.connect()
        await client.wait_video(10, timeout=60)
        start = client.rx.video_t[-1]
        await asyncio.sleep(5.0)
        end = client.rx.video_t[-1]
        rx = client.rx
        fps = fps_between(rx.video_t, start, end)
        assert fps >= 24.0, f"{fps:.1f} FPS"
        # RTP time follows the audio clock (3600 ticks a frame at 25 FPS), not aiortc's fixed 1/30 s
        steps = np.diff(np.array(rx.video_pts[-100:], np.int64))
        assert np.median(steps) == VIDEO_CLOCK // 25, np.unique(steps, return_counts=True)
        # the greeting is heard: speech energy on the audio track, and the mouth moves with it
        assert max(rx.audio_rms) > 0.02
        mouth = np.array(rx.mouth)
        assert np.ptp(mouth) > 3.0
    finally:
        await client.close()


async def test_bot_serves_the_prebuilt_client_and_its_start_endpoint(
    bot: tuple[ServerProcess, tuple[int, int, int, int]],
) -> None:
    server, _ = bot
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base}/") as resp:
            page = await resp.text()
            assert resp.status == 200 and "<!doctype html>" in page.lower()
        async with http.post(f"{server.base}/start", json={"transport": "webrtc"}) as resp:
            body = await resp.json()
            assert resp.status == 200 and len(body["sessionId"]) >= 32
        async with http.post(f"{server.base}/api/offer", json={"sdp": 1}) as resp:
            assert resp.status == 400
        async with http.patch(f"{server.base}/api/offer", json={"pc_id": "nobody", "candidates": []}) as resp:
            assert resp.status == 404
        async with http.get(f"{server.base}/healthz") as resp:
            assert (await resp.json())["status"] == "ok"


def test_bot_needs_a_model_name_with_an_llm_url() -> None:
    from realtime.pipecat.bot import BotError, bot_settings
    from realtime.settings import Settings

    assert bot_settings(Settings(llm_url="http://127.0.0.1:1/v1", llm_model="m")).brain == "openai"
    assert bot_settings(Settings()).brain == "echo"
    with pytest.raises(BotError):
        bot_settings(Settings(llm_url="http://127.0.0.1:1/v1"))


def test_prebuilt_client_is_found() -> None:
    from realtime.pipecat.bot import prebuilt_client_dir

    dist = prebuilt_client_dir()
    if dist is None:
        pytest.skip("pipecat-ai-small-webrtc-prebuilt (the bot extra) is not installed")
    assert (dist / "index.html").is_file() and any((dist / "assets").glob("*.js"))

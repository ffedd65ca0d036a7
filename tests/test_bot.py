"""``splatcast bot`` end to end: the real subprocess, a real aiortc peer speaking SmallWebRTC's signalling.

The client does what our page (and Pipecat's prebuilt browser client) does (``POST /start``,
then the offer to ``/sessions/{id}/api/offer``, audio transceiver first with a
microphone track), and records every frame and audio packet that arrives. The
bot greets on connect, so speech arrives without any user turn.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from aiortc.mediastreams import AudioStreamTrack
from browser_launch import CHROMIUM, CHROMIUM_ARGS

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
    async with Client(server.base, mouth_box=box, protocol="smallwebrtc", mic=AudioStreamTrack()) as client:
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


async def test_bot_serves_its_page_and_the_smallwebrtc_endpoints(
    bot: tuple[ServerProcess, tuple[int, int, int, int]],
) -> None:
    server, _ = bot
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base}/") as resp:
            page = await resp.text()
            assert resp.status == 200 and "<!doctype html>" in page.lower()
        # everything the page loads is served by the bot itself (no other site, no CDN)
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), page
        for asset in ("/bot.js", "/bot.css"):
            async with http.get(f"{server.base}{asset}") as resp:
                assert resp.status == 200 and "//cdn" not in (await resp.text())
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_the_page_works_offline_in_chromium(bot: tuple[ServerProcess, tuple[int, int, int, int]]) -> None:
    """Headless Chromium with fake devices, every request to another host refused: Connect sends the
    offer, the avatar's video plays at its size and the greeting's audio is heard (decoded energy)."""
    from playwright.sync_api import Route, sync_playwright

    server, _ = bot
    elsewhere: list[str] = []

    def only_the_bot(route: Route) -> None:
        if route.request.url.startswith(server.base):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]  # no DNS at all
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            context = browser.new_context()
            context.route("**/*", only_the_bot)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server.base + "/")
            page.click("#bot-connect")
            page.wait_for_function("window.splatcastBot.state === 'connected'", timeout=60_000)
            page.wait_for_function(
                "(() => { const v = document.getElementById('bot-video');"
                f" return v.readyState >= 2 && v.currentTime > 1.0 && v.videoWidth === {SIZE}; }})()",
                timeout=30_000,
            )
            page.wait_for_function("window.splatcastBot.framesDecoded > 50", timeout=30_000)
            # the bot greets on connect: its voice is decoded and played (energy accumulates)
            page.wait_for_function("window.splatcastBot.audioEnergy > 0.01", timeout=60_000)
            status = page.evaluate("window.splatcastBot")
            assert status["width"] == SIZE and status["pcId"], status
        finally:
            browser.close()
    assert not elsewhere, f"the page asked other sites for {elsewhere}"
    assert not errors, errors

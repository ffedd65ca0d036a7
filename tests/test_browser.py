"""The browser client in real headless Chromium (Debian's) against a real server, with fake media devices.

Skips when Chromium is not installed (`make test` installs it as root; see scripts/install-system-deps.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_launch import CHROMIUM, CHROMIUM_ARGS

from benchmarks.server_process import ServerProcess
from engines.splat.synthetic import write_synthetic_avatar

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path: Path = tmp_path_factory.mktemp("avatar") / "synthetic.safetensors"
    write_synthetic_avatar(path)
    srv = ServerProcess("--avatar", str(path), "--size", "320", "--capacity", "4")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_page_connects_plays_video_and_reports_fps(server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.base + "/")
            page.click("#connect")
            page.wait_for_function("window.splatcastState === 'connected'", timeout=60_000)
            # the video element really plays: its clock advances and frames are decoded
            page.wait_for_function(
                "(() => { const v = document.getElementById('avatar-video');"
                " return v && v.readyState >= 2 && v.currentTime > 1.0 && v.videoWidth === 320; })()",
                timeout=30_000,
            )
            # the stats overlay (from getStats) reports the received frame rate
            page.wait_for_function(
                "window.splatcastStats && window.splatcastStats.framesDecoded > 75", timeout=30_000
            )
            # steady state: the overlay reports >= 24 FPS (allowing start-up seconds on a busy machine)
            page.wait_for_function("window.splatcastStats.fps >= 24", timeout=20_000)
            stats = page.evaluate("window.splatcastStats")
            assert stats["fps"] >= 24, stats
            shown = page.inner_text("#stats-fps")
            assert float(shown.split()[0]) >= 23, shown  # the overlay text, refreshed each second
            # typing into the say box makes the avatar speak: the conversation state goes to speaking
            page.fill("#say-text", "Hello from the browser test.")
            page.press("#say-text", "Enter")
            page.wait_for_function(
                "document.getElementById('conv-state').dataset.convState === 'speaking'", timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "call.png"))
            assert not errors, errors
        finally:
            browser.close()

"""Headless Chromium end to end: the fake camera plays a clip made here, the page records it with
MediaRecorder, uploads it, shows the build's progress, connects to the new avatar and receives its video."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.server_process import ServerProcess
from tests.browser_avatar_flow import create_avatar_in_page, write_y4m
from tests.browser_launch import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed"),
    pytest.mark.slow,
]
pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")
    root = tmp_path_factory.mktemp("library")
    srv = ServerProcess("--avatars", str(root / "avatars"), "--size", "256", "--capacity", "4")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _get(server: ServerProcess, path: str) -> object:
    with urllib.request.urlopen(server.base + path, timeout=30) as resp:
        return json.loads(resp.read())


def test_record_upload_build_and_talk_to_it(server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    clip = write_y4m(tmp_path / "face.y4m")
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.base + "/?record=short")
            # the picker lists the bundled avatar with its preview, selected
            page.wait_for_selector(
                ".avatar-card[data-avatar='default'][aria-checked='true'] img[src^='blob:']"
            )
            build = create_avatar_in_page(page, "Browser test", timeout_s=400)
            assert build["state"] == "done", (build.get("error"), build.get("message"), build)
            job = _get(server, f"/api/avatars/jobs/{build['job']}")
            assert isinstance(job, dict) and job["builder"] == "engines.create.replica", (
                job
            )  # a video: a replica
            new_id = build["avatar"]
            listed = _get(server, "/api/avatars")
            assert isinstance(listed, list)
            mine = next(a for a in listed if a["id"] == new_id)
            assert mine["source"] == "video" and mine["name"] == "Browser test"
            # "talk to it": the page connects to the new avatar and plays its video
            page.click("#talk-to-it")
            page.wait_for_function("window.splatcastState === 'connected'", timeout=60_000)
            page.wait_for_function(
                "(() => { const v = document.getElementById('avatar-video');"
                " return v && v.readyState >= 2 && v.currentTime > 1.0 && v.videoWidth === 256; })()",
                timeout=60_000,
            )
            assert page.evaluate("window.splatcastAvatar") == new_id
            page.wait_for_selector(f".avatar-card[data-avatar='{new_id}'][aria-checked='true']")
            sessions = _get(server, "/api/sessions")
            assert isinstance(sessions, list) and [s["avatar"] for s in sessions] == [new_id]
            # picking the default avatar again during the call reconnects to it
            page.click(".avatar-card[data-avatar='default']")
            page.wait_for_function(
                "window.splatcastState === 'connected' && window.splatcastSession !== null", timeout=60_000
            )
            page.wait_for_function(
                "(() => { const v = document.getElementById('avatar-video'); return v && v.currentTime > 0.5; })()",
                timeout=60_000,
            )
            sessions = _get(server, "/api/sessions")
            assert isinstance(sessions, list) and [s["avatar"] for s in sessions] == ["default"]
            assert not errors, errors
        finally:
            browser.close()

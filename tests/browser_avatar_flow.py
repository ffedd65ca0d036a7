"""The page's "Create your avatar" flow driven in headless Chromium with a fake camera (shared by the
browser test and scripts/avatar_screenshots.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_y4m(path: Path, seconds: float = 3.0, fps: int = 15, size: tuple[int, int] = (640, 480)) -> Path:
    """A clip of the astronaut portrait slowly moving (uncompressed YUV 4:2:0), for Chromium's fake camera.

    Made here from ``skimage.data.astronaut()`` (public domain): a real face, one person.
    """
    from PIL import Image
    from skimage import data

    w, h = size
    # framed as a webcam frames a person: the whole head and shoulders in view, the portrait (square) fit to
    # the frame's height with its edge colours carried to the sides
    side_px = h
    portrait = Image.fromarray(np.asarray(data.astronaut(), dtype=np.uint8)).resize((side_px, side_px))
    base = np.asarray(portrait, dtype=np.float32)
    left, right = base[:, :4].mean(axis=(1,)), base[:, -4:].mean(axis=(1,))  # [h, 3]
    x0 = (w - side_px) // 2
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:, :x0] = left[:, None]
    canvas[:, x0 + side_px :] = right[:, None]
    canvas[:, x0 : x0 + side_px] = base
    still = Image.fromarray(canvas.astype(np.uint8))
    frames = round(seconds * fps)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(frames):
            phase = 2 * np.pi * k / frames
            # a gentle sway: the picture is alive, the face always in view
            dx = 6 * np.sin(phase)
            moved = still.transform(
                still.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, 0), Image.Resampling.BILINEAR
            )
            rgb = np.asarray(moved, dtype=np.float32)
            y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            cb = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
            cr = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
            sub = (slice(None, None, 2), slice(None, None, 2))
            out.write(b"FRAME\n")
            for plane in (y, cb[sub], cr[sub]):
                out.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())
    return path


def create_avatar_in_page(
    page: Any, name: str, shots: Path | None = None, timeout_s: float = 400.0
) -> dict[str, Any]:
    """Open the dialog, record with the fake camera (short phases: the page is opened with ?record=short),
    upload, follow the build to the end; returns ``window.splatcastBuild``. Screenshots go to ``shots``."""
    page.click("#create-avatar")
    page.wait_for_selector("#create-dialog[open]")
    if shots is not None:
        page.screenshot(path=str(shots / "create-choose.png"))
    page.click("#record-choice")
    page.wait_for_function(
        "(() => { const v = document.getElementById('record-preview'); return v && v.videoWidth > 0; })()",
        timeout=30_000,
    )
    page.click("#record-start")
    page.wait_for_selector("#record-next:not([hidden])", timeout=30_000)
    if shots is not None:
        page.screenshot(path=str(shots / "create-record.png"))
    page.click("#record-next")
    page.wait_for_function("document.getElementById('create-dialog').dataset.recording === 'listening'")
    page.wait_for_function(
        "document.getElementById('create-dialog').dataset.step === 'details'", timeout=30_000
    )
    page.fill("#create-name", name)
    page.click("#create-upload")
    page.wait_for_function("window.splatcastUpload && window.splatcastUpload.done", timeout=120_000)
    # the server checks the file at the lowest CPU priority before it answers: slow on a busy machine
    page.wait_for_function(
        "window.splatcastBuild && window.splatcastBuild.state === 'running' && window.splatcastBuild.progress > 0.1",
        timeout=int(timeout_s * 1000),
    )
    if shots is not None:
        page.screenshot(path=str(shots / "create-build.png"))
    page.wait_for_function(
        "window.splatcastBuild && ['done', 'failed', 'cancelled'].includes(window.splatcastBuild.state)",
        timeout=int(timeout_s * 1000),
    )
    build: dict[str, Any] = page.evaluate("window.splatcastBuild")
    if build["state"] == "done":
        page.wait_for_selector("#talk-to-it:visible")
        if shots is not None:
            page.screenshot(path=str(shots / "create-done.png"))
    return build

"""How the browser tests (and scripts/client_screenshot.py) launch Debian's Chromium."""

from __future__ import annotations

import shutil

# headless, fake camera and microphone, media autoplay without a gesture
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # None: browser tests skip

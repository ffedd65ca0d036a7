"""Rebuild docs/client.png: the browser client in a call with the default avatar, mid-sentence.

    python scripts/client_screenshot.py [-o docs/client.png] [--size 512]

Starts a local ``splatcast serve`` (the default avatar, offline), opens the
page in headless Debian Chromium with fake media devices, connects, types a
sentence into the say box and takes the screenshot while the avatar speaks.
Needs the dev extra (playwright) and the ``chromium`` package.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_process import ServerProcess  # noqa: E402
from tests.browser_launch import CHROMIUM_ARGS  # noqa: E402

SENTENCE = "Hi! I'm a Gaussian-splat avatar, streaming to your browser in real time."


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "client.png")
    parser.add_argument("--size", type=int, default=512, help="video size in pixels (default 512)")
    parser.add_argument(
        "--delay", type=float, default=1.6, help="seconds after 'speaking' to take the picture"
    )
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print(
            "client_screenshot: Debian chromium is not installed (apt-get install chromium)", file=sys.stderr
        )
        return 1
    from playwright.sync_api import sync_playwright

    server = ServerProcess("--size", str(args.size))
    try:
        server.wait_ready()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(server.base + "/")
                page.click("#connect")
                page.wait_for_function("window.splatcastState === 'connected'", timeout=60_000)
                page.wait_for_function(
                    "window.splatcastStats && window.splatcastStats.framesDecoded > 100", timeout=60_000
                )
                page.fill("#say-text", SENTENCE)
                page.press("#say-text", "Enter")
                page.wait_for_function(
                    "document.getElementById('conv-state').dataset.convState === 'speaking'", timeout=30_000
                )
                time.sleep(args.delay)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
            finally:
                browser.close()
    finally:
        server.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

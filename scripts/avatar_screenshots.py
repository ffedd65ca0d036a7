"""Rebuild docs/avatar-picker.png and docs/avatar-create-*.png: the avatar picker and the "Create your
avatar" flow in headless Chromium, with a fake camera playing a clip of the astronaut portrait.

    python scripts/avatar_screenshots.py [-o docs]

Starts a local ``splatcast serve`` with an empty temporary library, records with the page (short phases),
builds the avatar, and takes the pictures: the record step, the build's progress, the finished build,
and the picker with the new avatar beside the bundled one during a call with it.
Needs the dev extra (playwright), the ``chromium`` package and the face-landmark environment.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_process import ServerProcess  # noqa: E402
from tests.browser_avatar_flow import create_avatar_in_page, write_y4m  # noqa: E402
from tests.browser_launch import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if CHROMIUM is None:
        print(
            "avatar_screenshots: Debian chromium is not installed (apt-get install chromium)", file=sys.stderr
        )
        return 1
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="splatcast-shots-") as tmp:
        work = Path(tmp)
        clip = write_y4m(work / "face.y4m", size=(640, 480))
        server = ServerProcess("--avatars", str(work / "avatars"), "--size", "512")
        try:
            server.wait_ready()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(server.base + "/?record=short")
                page.wait_for_selector(".avatar-card[data-avatar='default'] img[src^='blob:']")
                build = create_avatar_in_page(page, "Eileen (recorded)", shots=work, timeout_s=1500)
                if build["state"] != "done":
                    print(
                        f"avatar_screenshots: the build {build['state']}: {build['error']}", file=sys.stderr
                    )
                    return 1
                for name in ("create-record", "create-build", "create-done"):
                    shutil.copyfile(work / f"{name}.png", args.out / f"avatar-{name}.png")
                page.click("#talk-to-it")
                page.wait_for_function("window.splatcastState === 'connected'", timeout=60_000)
                page.wait_for_function(
                    "document.getElementById('avatar-video').currentTime > 2.0", timeout=60_000
                )
                page.click("#stats-toggle")  # fold the stats overlay: the picture is about the picker
                page.screenshot(path=str(args.out / "avatar-picker.png"))
                browser.close()
        finally:
            server.stop()
    for name in ("avatar-picker", "avatar-create-record", "avatar-create-build", "avatar-create-done"):
        print(f"wrote {args.out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The browser client: served by the app with the right types, self-contained, consistent with its script."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from realtime.media.motion import EMOTIONS
from realtime.settings import Settings
from realtime.web.server import create_app

STATIC = resources.files("realtime.web").joinpath("static")


def read(name: str) -> str:
    return STATIC.joinpath(name).read_text(encoding="utf-8")


class _IdleManager:
    """Stands in for the session manager: serving the page needs no engine, only start/close hooks."""

    def start(self) -> None:
        pass

    async def close_all(self) -> None:
        pass


async def test_index_and_assets_are_served_with_their_types() -> None:
    app = create_app(Settings(), cast(Any, _IdleManager()))
    async with TestClient(TestServer(app)) as client:
        index = await client.get("/")
        assert index.status == 200
        assert index.content_type == "text/html"
        page = await index.text()
        assert '<script src="/static/app.js"' in page
        assert '<link rel="stylesheet" href="/static/style.css">' in page

        js = await client.get("/static/app.js")
        assert js.status == 200
        assert js.content_type in ("application/javascript", "text/javascript")
        assert "splatcastStats" in await js.text()

        css = await client.get("/static/style.css")
        assert css.status == 200
        assert css.content_type == "text/css"
        assert "--bg" in await css.text()


def test_page_needs_nothing_from_other_hosts() -> None:
    page, css, js = read("index.html"), read("style.css"), read("app.js")
    resources_ = re.findall(
        r'<(?:script|link|img|video|audio|source|iframe)\b[^>]*?(?:src|href)="([^"]+)"', page
    )
    assert resources_, "no resource references found"
    assert all(r.startswith(("/static/", "data:")) for r in resources_), resources_
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", css)
    assert not re.search(r"""(fetch|import|WebSocket)\(\s*[`'"]https?://""", js)


def test_script_and_page_agree_on_element_ids() -> None:
    page, js = read("index.html"), read("app.js")
    page_ids = set(re.findall(r'\bid="([^"]+)"', page))
    used = set(re.findall(r'\$\("([^"]+)"\)', js))
    assert used, "app.js looks up no elements"
    assert used <= page_ids, f"app.js uses ids missing from index.html: {sorted(used - page_ids)}"
    required = {
        "connect", "mic", "interrupt", "emotion", "intensity", "say-form", "say-text", "transcript",
        "avatar-video", "reconnect", "error", "stats", "stats-fps", "stats-dropped", "stats-decoded",
        "stats-jitter", "stats-rtt", "conv-state",
    }  # fmt: skip
    assert required <= page_ids, sorted(required - page_ids)
    assert re.search(r"<video[^>]*\bplaysinline\b[^>]*\bautoplay\b", page)


def test_emotion_picker_offers_exactly_the_motion_emotions() -> None:
    options = re.findall(r'<option value="([^"]+)"', read("index.html"))
    assert tuple(options) == ("auto", *EMOTIONS)  # auto (the default): each sentence's inferred emotion


def test_script_talks_the_server_api() -> None:
    js = read("app.js")
    for needle in (
        '"/api/config"',
        '"/api/offer"',
        '"/say"',
        '"/interrupt"',
        '"/emotion"',
        '"/events"',
        "/api/sessions/",
        'method: "DELETE"',
        "keepalive: true",
        "Authorization",
        "Bearer",
        'direction: "sendrecv"',
        'direction: "recvonly"',
        "iceGatheringState",
        "getStats()",
        "framesPerSecond",
        "framesDropped",
        "currentRoundTripTime",
        "window.splatcastState",
        "window.splatcastStats",
    ):
        assert needle in js, needle
    for state in ("disconnected", "connecting", "connected", "failed"):
        assert f'"{state}"' in js, state
    for message_type in ("state", "transcript", "stats", "error"):
        assert f'case "{message_type}"' in js, message_type


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_script_parses() -> None:
    path = STATIC.joinpath("app.js")
    done = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

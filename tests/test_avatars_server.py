"""The avatar library against a real `splatcast serve`: create from a photo, list, offer with `avatar`,
frames show that face, delete refused while in use and then done; a second Piper voice chosen per avatar
drives the lips through its alignments."""

from __future__ import annotations

import asyncio
import io
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client
from engines import assets

skimage = pytest.importorskip("skimage")
SIZE = 256
VOICE = "en_US-other-medium"


def _second_voice(folder: Path) -> None:
    model, config = assets.piper_voice()
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(model, folder / f"{VOICE}.onnx")
    os.symlink(config, folder / f"{VOICE}.onnx.json")


def _blue_astronaut() -> bytes:
    """The astronaut with red and blue swapped: one face, clearly not the bundled avatar's colours."""
    from PIL import Image

    image = np.asarray(skimage.data.astronaut(), dtype=np.uint8)[:, :, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")
    root = tmp_path_factory.mktemp("library")
    _second_voice(root / "voices")
    srv = ServerProcess(
        "--avatars",
        str(root / "avatars"),
        "--voices",
        str(root / "voices"),
        "--size",
        str(SIZE),
        "--capacity",
        "4",
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _get(server: ServerProcess, path: str) -> Any:
    with urllib.request.urlopen(server.base + path, timeout=30) as resp:
        return json.loads(resp.read())


async def _create(http: aiohttp.ClientSession, base: str, name: str, voice: str | None) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("name", name)
    if voice:
        form.add_field("voice", voice)
    form.add_field("file", _blue_astronaut(), filename="blue.jpg", content_type="image/jpeg")
    async with http.post(f"{base}/api/avatars", data=form) as r:
        created = await r.json()
        assert r.status == 202, created
    async with http.ws_connect(f"{base}/api/avatars/jobs/{created['job']}/events") as ws:
        async for msg in ws:
            event = msg.json()
    assert event["state"] == "done", event
    return created


def _rest_render(path: Path) -> np.ndarray:
    from engines.splat.avatar import load_avatar
    from engines.splat.render import render

    avatar = load_avatar(path)
    return render(avatar, avatar.rest(1), size=(SIZE, SIZE), backend="cpu")[0].astype(np.float64)


@pytest.mark.slow
async def test_create_list_offer_frames_delete(server: ServerProcess) -> None:
    voices = _get(server, "/api/voices")
    assert [v["id"] for v in voices] == ["en_US-joe-medium", VOICE] and voices[0]["default"]
    async with aiohttp.ClientSession() as http:
        created = await _create(http, server.base, "Blue", VOICE)
        listed = _get(server, "/api/avatars")
        assert [a["id"] for a in listed] == ["default", created["id"]]
        mine = listed[1]
        assert mine["name"] == "Blue" and mine["voice"] == VOICE and mine["source"] == "photo"

        client = Client(server.base, avatar=created["id"])
        try:
            await client.connect()
            client.watch_events()
            await client.wait_video(40, timeout=60)
            sessions = _get(server, "/api/sessions")
            assert [s["avatar"] for s in sessions] == [created["id"]]
            # the frames show this avatar's face, not the default one's
            frame = client.last_frame
            assert frame is not None
            rgb = frame.to_ndarray(format="rgb24").astype(np.float64)
            entry_path = Path(_library_path(server, created["id"]))
            mine_err = float(np.mean((rgb - _rest_render(entry_path)) ** 2))
            default_err = float(np.mean((rgb - _rest_render(assets.default_avatar())) ** 2))
            assert mine_err < 0.25 * default_err, (mine_err, default_err)
            # delete is refused while the session uses it
            async with http.delete(f"{server.base}/api/avatars/{created['id']}") as r:
                assert r.status == 409, await r.text()
            # its own voice (the second Piper voice on disk) speaks, and its alignments drive the lips
            status, _ = await client.post("say", {"text": "Papa bought a big blue boat."})
            assert status == 202
            for _ in range(200):
                if any(e.get("type") == "utterance_done" for _, e in client.rx.events):
                    break
                await asyncio.sleep(0.1)
            starts = [e for _, e in client.rx.events if e.get("type") == "utterance_start"]
            assert starts and all(e["aligned"] for e in starts), client.rx.events
            assert any(f"PiperTTS: loaded {VOICE}.onnx" in line for line in server.log)
            moving = [d for d in client.rx.video_diff if d > 0]
            assert max(moving) > 2 * float(np.median(moving))  # the mouth moved while it spoke
        finally:
            await client.close()
        await asyncio.sleep(0.5)
        async with http.delete(f"{server.base}/api/avatars/{created['id']}") as r:
            assert r.status == 200, await r.text()
        assert [a["id"] for a in _get(server, "/api/avatars")] == ["default"]
        async with http.get(f"{server.base}/api/avatars/{created['id']}") as r:
            assert r.status == 404


def _library_path(server: ServerProcess, avatar_id: str) -> str:
    args = server.proc.args
    assert isinstance(args, list)
    root = Path(args[args.index("--avatars") + 1])
    return str(root / avatar_id / "avatar.safetensors")


async def test_offer_with_an_unknown_avatar_is_404(server: ServerProcess) -> None:
    client = Client(server.base, avatar="0123456789ab")
    try:
        with pytest.raises(RuntimeError, match="404"):
            await client.connect()
    finally:
        await client.close(delete=False)
    assert _get(server, "/healthz")["sessions"] == 0


@pytest.mark.slow
async def test_a_session_keeps_streaming_while_an_avatar_builds(server: ServerProcess) -> None:
    """The build runs beside a live session; the session never stalls (its frame rate is a benchmark:
    `splatcast bench build`)."""
    client = Client(server.base)
    try:
        await client.connect()
        await client.wait_video(25, timeout=60)
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("name", "built beside a call")
            form.add_field("file", _blue_astronaut(), filename="blue.jpg", content_type="image/jpeg")
            async with http.post(f"{server.base}/api/avatars", data=form) as r:
                created = await r.json()
                assert r.status == 202, created
            running_seen = False
            windows: list[int] = []
            while True:
                before = len(client.rx.video_t)
                await asyncio.sleep(2.0)
                async with http.get(f"{server.base}/api/avatars/jobs/{created['job']}") as r:
                    job = await r.json()
                if job["state"] == "running":
                    running_seen = True
                    windows.append(len(client.rx.video_t) - before)
                if job["state"] in ("done", "failed", "cancelled"):
                    break
            assert job["state"] == "done", job
            assert running_seen and windows
            assert min(windows) > 0, windows  # frames arrived in every 2 s window of the build
            async with http.delete(f"{server.base}/api/avatars/{created['id']}") as r:
                assert r.status == 200
    finally:
        await client.close()

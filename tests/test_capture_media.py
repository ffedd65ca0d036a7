"""The test media for avatar creation from video: real clips, bad files, synthetic captures.

The synthetic capture is checked against mediapipe itself: the face mesh found
on its frames must land where the generator drew the landmarks (so the truth
is what a tracker sees), and its mouth must really open and close with the
known ``jawOpen``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from capture_media import (
    bad_black_video,
    bad_face_out_of_frame,
    bad_small_face,
    bad_text_as_mp4,
    bad_two_faces,
    real_clip,
    real_media,
    synthetic_capture,
)

from engines.create.mp4 import read_frames

av = pytest.importorskip("av")


def _probe(path: Path) -> tuple[int, int, float, int]:
    """(width, height, seconds, frames) of a clip's video stream, by decoding it."""
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        w, h = s.codec_context.width, s.codec_context.height
        for _ in c.decode(video=0):
            n += 1
        rate = float(s.average_rate or s.guessed_rate or 25)
    return w, h, n / rate, n


def test_real_clips_are_what_the_readme_says() -> None:
    w, h, secs, _ = _probe(real_clip("woman_expressions"))
    assert (w, h) == (640, 360) and 19.0 < secs < 20.5
    w, h, secs, _ = _probe(real_clip("man_smiling_short"))
    assert (w, h) == (640, 360) and 2.0 < secs < 3.0  # below the 3 s minimum
    assert real_media("multi_face").suffix == ".jpg"
    with pytest.raises(KeyError, match="known"):
        real_media("nope")


def test_text_renamed_mp4_does_not_decode(tmp_path: Path) -> None:
    path = bad_text_as_mp4(tmp_path)
    assert path.suffix == ".mp4" and path.read_text().startswith("These are my meeting notes")
    with pytest.raises(av.error.FFmpegError):
        av.open(str(path)).close()


def test_black_video_is_black_with_audio(tmp_path: Path) -> None:
    path = bad_black_video(tmp_path, seconds=2.0)
    frames = read_frames(path)
    assert len(frames) == 50 and max(int(f.max()) for f in frames) <= 20  # codec noise only
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1


def test_bad_clips_from_the_real_clip(tmp_path: Path) -> None:
    two = read_frames(bad_two_faces(tmp_path, seconds=1.0))
    assert two[0].shape == (360, 1280, 3)
    # the right half is the left half mirrored (both real faces)
    diff = np.abs(two[0][:, :640].astype(int) - two[0][:, 640:][:, ::-1].astype(int)).mean()
    assert diff < 6.0
    out = read_frames(bad_face_out_of_frame(tmp_path, seconds=3.0))
    # after 2 s only the clip's right quarter (no face) is left, at the left edge; the rest is black
    assert out[-1][:, 640 // 4 + 8 :].max() <= 20 and out[0].mean() > 30
    small = read_frames(bad_small_face(tmp_path, seconds=1.0))
    assert small[0].shape == (90, 160, 3)


@pytest.mark.slow
def test_synthetic_capture_has_known_answers() -> None:
    from engines.create.face_env import detect_landmarks
    from engines.create.synthetic_capture import CHANNELS

    cap = synthetic_capture()  # the one other tests use (built once per machine)
    frames = read_frames(cap.video)
    assert len(frames) == cap.frames == 300
    assert frames[0].shape[:2] == cap.size
    truth = cap.matrix()
    assert truth.shape == (cap.frames, len(CHANNELS))
    assert np.all(truth[: cap.rest_frames] == 0) and np.all(cap.pose[: cap.rest_frames] == 0)
    jaw = cap.coefficients["jawOpen"]
    assert jaw.max() > 0.5  # real speech opens the mouth
    with av.open(str(cap.video)) as c:
        assert c.streams.audio[0].sample_rate == cap.sample_rate == 22050
    # mediapipe sees the landmarks where the generator drew them, on the rest frame and the widest mouth
    open_k = int(np.argmax(jaw))
    from PIL import Image

    for k in (0, open_k):
        png = Path(cap.video).with_name(f"frame{k}.png")
        Image.fromarray(frames[k]).save(png)
        found = detect_landmarks(png).faces
        assert len(found) == 1
        err = np.linalg.norm(found[0][:468, :2] - cap.landmarks[k, :468], axis=1)
        iod = np.linalg.norm(cap.landmarks[k, 468] - cap.landmarks[k, 473])
        assert np.median(err) < 0.05 * iod, (k, np.median(err), iod)
        gap = found[0][14, 1] - found[0][13, 1]  # inner lip centre: lower minus upper
        if k == 0:
            assert gap < 0.05 * iod, gap  # closed at rest
        else:
            assert gap > 0.2 * iod, gap  # open at the widest jawOpen

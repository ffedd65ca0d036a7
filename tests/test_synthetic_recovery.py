"""The tracker and the expression fit recover a synthetic capture's known answers.

The synthetic capture (tests/capture_media.py, engines/create/synthetic_capture.py)
is the astronaut photo animated with known expression coefficients (mouth
values from Piper's phoneme alignments of real speech, blinks, brow raises)
and a known head pose, drawn by a piecewise-affine warp of its mediapipe mesh,
not by our renderer. The clip is tracked (mediapipe, video mode), a one-shot
avatar is built from its first frame (the rest face), and the avatar's own rig
is fitted to every frame (engines.create.reenact.drive).

The capture's expression fields are not the rig's, so a coefficient is
compared by correlation over the clip (300 frames), not by value. Measured on
this machine: jawOpen r = 0.905, eyeBlinkLeft/Right r = 0.70 / 0.80, head yaw
r = 0.996 (median error 0.7°), pitch r = 0.84 (1.7°), roll r = 0.98 (0.6°).
Asserted, with a margin: jawOpen r ≥ 0.85, blinks r ≥ 0.6, yaw r ≥ 0.95 with a
median error ≤ 1.5°, pitch r ≥ 0.75, roll r ≥ 0.9. (The other mouth channels
are not asserted: with the rig's 20 mouth channels the fit explains the same
lip motion several ways, so funnel/pucker/smile correlate only 0–0.5.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.create.face_env import FaceEnvError, ensure_env

pytest.importorskip("scipy")
reenact = pytest.importorskip(
    "engines.create.reenact", reason="the expression fit lands with the replica builder"
)


@pytest.fixture(scope="module")
def recovered():  # type: ignore[no-untyped-def]
    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")
    from capture_media import synthetic_capture

    from engines.create.self_reenact import one_shot_baseline
    from engines.create.tracking import track_video

    cap = synthetic_capture()
    tr = track_video(cap.video)
    assert tr.count == cap.frames  # 25 fps: every frame tracked
    assert np.array_equal(tr.frame_index, np.arange(cap.frames))
    avatar = one_shot_baseline(cap.video, tr, 0)  # the first frame: the rest face, frontal
    d = reenact.drive(avatar, tr, np.arange(tr.count))
    return cap, avatar, d


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


@pytest.mark.slow
def test_jaw_and_blinks_are_recovered(recovered) -> None:  # type: ignore[no-untyped-def]
    cap, avatar, d = recovered
    col = avatar.channel_index
    jaw = _r(d.params[:, col("jawOpen")], cap.coefficients["jawOpen"])
    assert jaw >= 0.85, jaw
    for side in ("Left", "Right"):
        blink = _r(d.params[:, col(f"eyeBlink{side}")], cap.coefficients[f"eyeBlink{side}"])
        assert blink >= 0.6, (side, blink)
    # silence (the rest frames at the start) reads as a closed, still mouth
    assert float(np.max(d.params[: cap.rest_frames, col("jawOpen")])) < 0.1


@pytest.mark.slow
def test_head_pose_is_recovered(recovered) -> None:  # type: ignore[no-untyped-def]
    cap, avatar, d = recovered
    col = avatar.channel_index
    yaw, pitch, roll = (d.params[:, col(c)] for c in ("headYaw", "headPitch", "headRoll"))
    assert _r(yaw, cap.pose[:, 1]) >= 0.95
    assert _r(pitch, cap.pose[:, 0]) >= 0.75
    assert _r(roll, cap.pose[:, 2]) >= 0.9
    err = np.degrees(np.abs(yaw - cap.pose[:, 1]))
    assert float(np.median(err)) <= 1.5, float(np.median(err))
    assert math.degrees(float(np.max(np.abs(cap.pose[:, 1])))) > 8.0  # the capture really turns

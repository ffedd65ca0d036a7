"""A replica's speaking style (metadata) steers the motion layers: mouth amplitude, blink rate, head motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.splat.avatar import DEFAULT_CHANNELS
from realtime.media.motion import (
    BLINK_GAMMA_SCALE_S,
    DRIFT_PEAK_RAD,
    MotionLayers,
    MotionStyle,
    SpeechFrame,
)

STYLE = {
    "version": 1,
    "mouth_gain": {"jawOpen": 0.5, "mouthFunnel": 1.5, "eyeBlinkLeft": 3.0, "mouthPucker": 9.0},
    "blink_rate_per_min": 30.0,
    "head_sway_rms_deg": {"pitch": 1.0, "yaw": 0.8, "roll": 0.4},
    "head_drift_rms_deg": {"pitch": 0.2, "yaw": 1.2, "roll": 0.3},
    "head_sway_spectrum": {"peak_hz": {"pitch": 1.0, "yaw": 0.5, "roll": 0.7}},
}


def test_style_from_metadata() -> None:
    st = MotionStyle.from_metadata(STYLE)
    assert st is not None
    # only mouth channels, clipped to [0.4, 2]
    assert st.mouth_gain == {"jawOpen": 0.5, "mouthFunnel": 1.5, "mouthPucker": 2.0}
    # mean start-to-start interval 2 s = 1.5 s + 2 · scale
    assert st.blink_gamma_scale_s == pytest.approx(0.25)
    assert st.drift_peak_rad[1] == pytest.approx(math.radians(1.2) * 2.78, rel=1e-6)
    assert st.sway_peak_rad[0] == 0.0 and st.sway_peak_rad[1] > st.sway_peak_rad[2] > 0.0
    assert st.sway_hz == pytest.approx((0.7 * 0.6, 1.3 * 0.6))
    for bad in (None, {}, {"version": 2}, {"version": 1, "mouth_gain": "x"}, "speaking"):
        assert MotionStyle.from_metadata(bad) is None


def _speech(jaw: float) -> SpeechFrame:
    return SpeechFrame(mouth={"jawOpen": jaw, "mouthFunnel": 0.4}, activity=1.0, stress=False, energy=0.3)


def test_mouth_gain_scales_speech() -> None:
    jaw, funnel = DEFAULT_CHANNELS.index("jawOpen"), DEFAULT_CHANNELS.index("mouthFunnel")
    plain = MotionLayers(DEFAULT_CHANNELS, 25, seed=1)
    styled = MotionLayers(DEFAULT_CHANNELS, 25, seed=1, style=MotionStyle.from_metadata(STYLE))
    a = plain.frame(0, _speech(0.6))
    b = styled.frame(0, _speech(0.6))
    assert a[jaw] == pytest.approx(0.6) and b[jaw] == pytest.approx(0.3)
    assert b[funnel] == pytest.approx(0.6)
    assert styled.frame(1, _speech(0.9))[funnel] == pytest.approx(0.6)  # clipped to 1 after the gain: 0.4·1.5


def _blink_onsets(layers: MotionLayers, frames: int) -> int:
    col = DEFAULT_CHANNELS.index("eyeBlinkLeft")
    v = np.array([layers.frame(k, None)[col] for k in range(frames)])
    closed = v > 0.5
    return int(np.count_nonzero(closed[1:] & ~closed[:-1]))


def test_blink_rate_follows_the_style() -> None:
    fps, minutes = 25, 6
    frames = fps * 60 * minutes
    default = _blink_onsets(MotionLayers(DEFAULT_CHANNELS, fps, seed=2), frames) / minutes
    fast = _blink_onsets(
        MotionLayers(DEFAULT_CHANNELS, fps, seed=2, style=MotionStyle.from_metadata(STYLE)), frames
    )
    # default: mean interval 1.5 + 2·1.0 = 3.5 s ≈ 17/min (12 % doubles add a few); style: 2 s ≈ 30/min
    assert 14 <= default <= 22
    assert 0.8 * 30 <= fast / minutes <= 1.25 * 30
    assert BLINK_GAMMA_SCALE_S == 1.0


def test_head_drift_follows_the_style() -> None:
    yaw = DEFAULT_CHANNELS.index("headYaw")
    quiet = {**STYLE, "head_drift_rms_deg": {"pitch": 0.1, "yaw": 0.1, "roll": 0.1}}
    lively = {**STYLE, "head_drift_rms_deg": {"pitch": 0.1, "yaw": 1.2, "roll": 0.1}}
    spread = []
    for style in (quiet, lively):
        layers = MotionLayers(DEFAULT_CHANNELS, 25, seed=3, style=MotionStyle.from_metadata(style))
        spread.append(np.std([layers.frame(k, None)[yaw] for k in range(25 * 60)]))
    assert spread[1] > 4 * spread[0]
    assert DRIFT_PEAK_RAD[1] == 0.035


def test_stream_for_a_replica_uses_its_style() -> None:
    from engines.splat.synthetic import make_test_avatar
    from realtime.media.stream import AvatarStream

    avatar = make_test_avatar(600)
    assert AvatarStream.for_avatar(avatar, 25)._motion.style is None
    avatar.metadata["speaking_style"] = STYLE
    style = AvatarStream.for_avatar(avatar, 25)._motion.style
    assert style is not None and style.mouth_gain["jawOpen"] == 0.5

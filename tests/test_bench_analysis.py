"""benchmarks.analysis on synthetic signals with known answers (no timing thresholds)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import analysis


def speech_like(t: np.ndarray, seed: int = 0) -> np.ndarray:
    """A syllable-rate (3-7 Hz) random envelope in 0..1, with pauses: what a mouth/voice does."""
    rng = np.random.default_rng(seed)
    knots = np.arange(-2.0, 40.0, 0.09)  # fixed in time, so a shifted t sees the same signal shifted
    values = rng.uniform(0.0, 1.0, knots.size) * (rng.uniform(size=knots.size) > 0.2)
    return np.interp(t, knots, values)


@pytest.mark.parametrize("delay_ms", [-120.0, -33.0, 0.0, 47.0, 180.0])
def test_av_offset_recovers_a_known_lag_from_frame_and_packet_receive_times(delay_ms: float) -> None:
    rng = np.random.default_rng(1)
    # 25 FPS video and 20 ms audio packets, both with receive jitter, over 30 s
    vt = np.arange(0.0, 30.0, 0.04) + rng.normal(0, 0.002, 750)
    at = np.arange(0.0, 30.0, 0.02) + rng.normal(0, 0.002, 1500)
    vt.sort()
    at.sort()
    mouth = speech_like(vt) + rng.normal(0, 0.02, vt.size)
    rms = 0.1 * speech_like(at - delay_ms / 1000.0)  # the audio shows what the mouth did delay_ms earlier
    env = analysis.envelope_on_frames(vt, at, rms)
    mids = np.append((vt[:-1] + vt[1:]) / 2, vt[-1] + 0.02)
    off = analysis.av_offset(vt, mouth, mids, env)
    assert off.lag_ms == pytest.approx(delay_ms, abs=8.0)
    assert off.corr > 0.5


def test_av_offset_sign_convention_positive_means_audio_after_video() -> None:
    t = np.arange(0.0, 20.0, 0.005)
    mouth = speech_like(t, seed=3)
    audio_late = speech_like(t - 0.1, seed=3)
    assert analysis.av_offset(t, mouth, t, audio_late).lag_ms == pytest.approx(100.0, abs=6.0)
    assert analysis.av_offset(t, audio_late, t, mouth).lag_ms == pytest.approx(-100.0, abs=6.0)


def test_av_offset_refuses_a_peak_outside_the_search_range() -> None:
    t = np.arange(0.0, 20.0, 0.005)
    mouth = speech_like(t, seed=4)
    with pytest.raises(analysis.AnalysisError, match="edge"):
        analysis.av_offset(t, mouth, t, speech_like(t - 0.34, seed=4), max_lag_ms=300.0)


def test_av_offset_refuses_signals_that_are_too_short() -> None:
    t = np.arange(0.0, 0.5, 0.04)
    with pytest.raises(analysis.AnalysisError):
        analysis.av_offset(t, t, t, t)


def test_envelope_on_frames_is_the_rms_of_the_packets_in_each_interval() -> None:
    frames = np.array([0.0, 0.04, 0.08, 0.12])
    packets = np.array([0.001, 0.021, 0.041, 0.061, 0.081, 0.101, 0.125])
    rms = np.array([0.3, 0.4, 0.0, 0.0, 1.0, 1.0, 0.2])
    env = analysis.envelope_on_frames(frames, packets, rms)
    np.testing.assert_allclose(env, [np.sqrt((0.09 + 0.16) / 2), 0.0, 1.0, 0.2], rtol=1e-12)


def test_interval_stats_percentiles_and_fps() -> None:
    # 100 intervals: 90 of 40 ms, 9 of 60 ms, 1 of 200 ms
    d = np.array([40.0] * 90 + [60.0] * 9 + [200.0]) / 1000.0
    t = np.concatenate([[0.0], np.cumsum(d)])
    s = analysis.interval_stats(t)
    assert s.p50_ms == pytest.approx(40.0)
    assert s.p95_ms == pytest.approx(60.0)
    assert s.p99_ms == pytest.approx(60.0 + 0.01 * 140.0, rel=1e-9)  # numpy linear interpolation
    assert s.max_ms == pytest.approx(200.0)
    assert s.fps == pytest.approx(100 / d.sum())
    assert s.count == 101
    p = analysis.percentiles([1.0, 2.0, 3.0, 4.0, float("nan")], (50,))
    assert p == {"p50": 2.5}


def test_dropped_frames_and_audio_gaps_count_what_is_missing() -> None:
    pts = np.array([0, 3600, 7200, 14400, 18000, 32400])  # missing 1, then 3
    assert analysis.dropped_frames(pts, 3600) == 4
    at = np.array([0.0, 0.02, 0.04, 0.2, 0.22, 0.3])  # one 160 ms gap, one 80 ms gap
    assert analysis.audio_gaps(at) == 2
    fps = analysis.fps_series(np.arange(0.0, 3.0, 0.04), 0.0, 3.0)
    np.testing.assert_allclose(fps, [25.0, 25.0, 25.0])


def test_mouth_open_onset_finds_the_first_sustained_opening_relative_to_the_idle_baseline() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(0.0, 6.0, 0.04)  # 150 frames
    luma = 120.0 + rng.normal(0, 0.3, t.size)
    luma[t >= 3.0] -= 12.0  # the dark inner mouth shows from 3.0 s on
    luma[50] -= 12.0  # a one-frame blip at 2.0 s is not an opening (hold = 2)
    base = analysis.mouth_baseline(luma[t < 1.5], luma[t >= 3.0])
    assert base.sign == -1.0
    assert base.median == pytest.approx(120.0, abs=0.2)
    onset = analysis.mouth_open_onset(t, luma, base, after=1.0)
    assert onset == pytest.approx(3.0, abs=1e-9)
    assert analysis.mouth_open_onset(t, luma, base, after=1.0, until=2.9) is None
    # a mouth already open when the window starts is not an onset until it has closed and reopened
    assert analysis.mouth_open_onset(t, luma, base, after=3.5) is None
    reopened = luma.copy()
    reopened[(t >= 4.0) & (t < 4.2)] = 120.0
    assert analysis.mouth_open_onset(t, reopened, base, after=3.5) == pytest.approx(4.2, abs=1e-9)
    # a brighter mouth (e.g. teeth) is found the same way
    bright = 2 * 120.0 - luma
    base_b = analysis.mouth_baseline(bright[t < 1.5], bright[t >= 3.0])
    assert base_b.sign == 1.0
    assert analysis.mouth_open_onset(t, bright, base_b, after=1.0) == pytest.approx(3.0, abs=1e-9)


def test_lagged_correlation_finds_integer_lag() -> None:
    x = speech_like(np.arange(0.0, 20.0, 0.04), seed=5)
    y = np.roll(x, 3)
    lag, best, _ = analysis.lagged_correlation(x, y, max_lag=8)
    assert lag == 3
    assert best > 0.99

"""Streaming log-mel features and resampling: chunked equals whole, frames are where they should be."""

from __future__ import annotations

import numpy as np
import pytest

from engines.a2v.features import (
    F_MAX,
    F_MIN,
    HOP,
    N_MELS,
    SAMPLE_RATE,
    FeatureError,
    LogMelStream,
    Resampler,
    log_mel,
    mel_filterbank,
    resample,
)


def _chunks(x: np.ndarray, rng: np.random.Generator, hi: int = 2000) -> list[np.ndarray]:
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, hi))
        out.append(x[i : i + n])
        i += n
    return out


def test_frame_count_and_streaming_equality() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16_000 + 77) * 0.1).astype(np.float32)
    whole = log_mel(x)
    assert whole.shape == (len(x) // HOP, N_MELS)
    s = LogMelStream()
    streamed = np.concatenate([s.push(c) for c in _chunks(x, rng)])
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-4)


def test_frames_are_causal_and_a_tone_lands_in_its_mel_band() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    x = np.concatenate([np.zeros(8000, np.float32), tone[:8000]])
    f = log_mel(x)
    # frame i ends at sample (i + 1) * 160: frames ending before the tone starts see silence only
    assert np.all(f[: 8000 // HOP] <= np.log(1e-6) + 1e-4)
    assert f[8000 // HOP].max() > np.log(1e-6) + 1.0  # first frame that reaches into the tone
    fb = mel_filterbank()
    centre_bin = round(1000.0 / (SAMPLE_RATE / 2) * (fb.shape[0] - 1))
    assert int(f[-1].argmax()) == int(fb[centre_bin].argmax())
    assert F_MIN < 1000.0 < F_MAX


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_chunked_equals_whole(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = (rng.standard_normal(rate) * 0.1).astype(np.float32)
    whole = resample(x, rate)
    assert abs(len(whole) - SAMPLE_RATE) <= 1
    r = Resampler(rate)
    streamed = np.concatenate([r.push(c) for c in _chunks(x, rng, 3000)] + [r.flush()])
    np.testing.assert_array_equal(streamed, whole)


def test_resampler_preserves_a_tone() -> None:
    t = np.arange(48_000) / 48_000
    y = resample((0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), 48_000)
    spectrum = np.abs(np.fft.rfft(y[2000:14000]))
    assert abs(np.fft.rfftfreq(12000, 1 / SAMPLE_RATE)[spectrum.argmax()] - 440.0) < 2.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(FeatureError):
        log_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(FeatureError):
        log_mel(np.zeros(100, np.int16))
    with pytest.raises(FeatureError):
        Resampler(100)

"""Corpus pieces: sentence generator, timeline re-timing, augmentations that must keep timing."""

from __future__ import annotations

import numpy as np
import pytest

from engines.a2v import augment
from engines.a2v.data import rescale_timeline, timeline_frames, timeline_length
from engines.a2v.features import SAMPLE_RATE
from engines.a2v.sentences import REAL_TEXT, generate_sentences
from engines.a2v.visemes import SPEECH_INDEX


def test_sentences_are_deterministic_distinct_and_varied() -> None:
    a = generate_sentences(300, seed=1)
    assert a == generate_sentences(300, seed=1)
    assert a != generate_sentences(300, seed=2)
    assert len(set(a)) == 300
    assert sum(s.endswith("?") for s in a) > 20
    assert any(ch.isdigit() for s in a for ch in s)
    assert set(REAL_TEXT) <= set(a)


def test_rescale_timeline_keeps_proportions_and_total() -> None:
    tl = [("sil", 1000), ("speech", [("^", 300), ("a", 1700), ("$", 500)]), ("sil", 1500)]
    out = rescale_timeline(tl, 7500)  # 1.5 × slower
    assert timeline_length(out) == 7500
    assert out[0] == ("sil", 1500)
    assert out[1][1] == [("^", 450), ("a", 2550), ("$", 750)]
    frames = timeline_frames(out, 50)
    assert frames.shape[0] == int(np.ceil(7500 / SAMPLE_RATE * 50))
    speech = frames[:, SPEECH_INDEX] > 0.5
    first = int(np.argmax(speech))
    assert first == round((1500 + 450) / SAMPLE_RATE * 50)


def _voice(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_timing_changes_report_their_factor() -> None:
    x = _voice()
    y, f = augment.speed(x, 1.25)
    assert f == pytest.approx(len(y) / len(x)) and f == pytest.approx(0.8, abs=0.01)
    y, f = augment.time_stretch(x, 0.8)
    assert len(y) == round(len(x) / 0.8) and f == pytest.approx(1.25, abs=0.01)
    # tempo change keeps pitch: the dominant frequency stays at 150 Hz
    spec = np.abs(np.fft.rfft(y[:SAMPLE_RATE]))
    assert abs(np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)[spec.argmax()] - 150.0) < 5.0


def test_channel_augmentations_keep_length_and_timing() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(SAMPLE_RATE, np.float32)
    x[8000:8400] = _voice(0.025)  # a burst at 0.5 s
    for y in (
        augment.equalize(x, rng),
        augment.reverb(x, rng, 0.4),
        augment.opus_round_trip(x, 24_000),
        augment.telephone(x),
        augment.formant_shift(x, 1.1),
    ):
        assert len(y) == len(x) and y.dtype == np.float32
        onset = int(np.argmax(np.abs(y) > 0.05 * np.abs(y).max()))
        assert abs(onset - 8000) < 80  # within 5 ms: labels stay valid


def test_opus_round_trip_is_faithful() -> None:
    x = _voice(1.0)
    y = augment.opus_round_trip(x, 32_000)
    assert np.corrcoef(x, y)[0, 1] > 0.95

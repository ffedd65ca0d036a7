"""a2v runtimes: frame timing, streaming equals whole-utterance, batching, fallback chain, behaviour."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from engines.a2v.runtime import A2V, A2VError, load_a2v
from engines.a2v.visemes import A2V_CHANNELS, JAW_OPEN_INDEX, SPEECH_INDEX

ATOL = 2e-5  # float32 rounding differs between chunkings (different matmul shapes)


@pytest.fixture(scope="session")
def a2v() -> A2V:
    return load_a2v("onnx-cpu")


def _audio(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) * 0.3
    voiced = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 700 * t)
    return ((voiced + rng.standard_normal(n) * 0.3) * env).astype(np.float32)


def _chunks(x: np.ndarray, rng: np.random.Generator, hi: int) -> list[np.ndarray]:
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, hi))
        out.append(x[i : i + n])
        i += n
    return out


def test_interface(a2v: A2V) -> None:
    assert a2v.channels == A2V_CHANNELS
    assert a2v.fps == 25 and a2v.runtime == "onnx-cpu"
    assert a2v.lookahead_ms == pytest.approx(80.0)
    assert load_a2v("onnx-cpu", fps=30).lookahead_ms <= 120.0


@pytest.mark.parametrize(("rate", "fps"), [(16_000, 25), (48_000, 25), (22_050, 30), (8_000, 25)])
def test_frame_count_and_probabilities(rate: int, fps: int) -> None:
    model = load_a2v("onnx-cpu", fps=fps)
    x = _audio(1.234, rate)
    out = model.infer(x, rate)
    assert out.dtype == np.float32
    assert out.shape == (math.ceil(len(x) * fps / rate), len(A2V_CHANNELS))
    np.testing.assert_allclose(out[:, :15].sum(1), 1.0, atol=1e-4)
    assert np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize(("rate", "fps", "hi"), [(48_000, 25, 4000), (16_000, 30, 700), (22_050, 25, 20_000)])
def test_streaming_equals_whole_utterance(rate: int, fps: int, hi: int) -> None:
    model = load_a2v("onnx-cpu", fps=fps)
    rng = np.random.default_rng(rate + fps)
    x = _audio(2.0, rate, seed=1)
    whole = model.infer(x, rate)
    s = model.stream(rate)
    emitted = 0
    parts = []
    pushed = 0
    for c in _chunks(x, rng, hi):
        got = s.push(c)
        pushed += len(c)
        emitted += len(got)
        parts.append(got)
        # a frame is released once lookahead past its end has arrived (resampler delay aside)
        assert emitted <= max(0, math.floor((pushed / rate - model.lookahead_ms / 1000) * fps) + 1)
    parts.append(s.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=ATOL)
    with pytest.raises(A2VError):
        s.push(x[:100])


def test_stream_releases_frames_with_bounded_delay(a2v: A2V) -> None:
    s = a2v.stream(16_000)
    got = sum(len(s.push(np.zeros(640, np.float32))) for _ in range(50))  # 2 s in 40 ms chunks
    # 50 frames of audio, lookahead 80 ms = 2 frames still waiting for their future
    assert got == 50 - 2


def test_batched_inference_equals_single(a2v: A2V) -> None:
    xs = [_audio(d, 48_000, seed=i) for i, d in enumerate([0.5, 1.3, 0.9])]
    batch = a2v.infer_batch(xs, 48_000)
    for x, b in zip(xs, batch, strict=True):
        np.testing.assert_allclose(b, a2v.infer(x, 48_000), rtol=0, atol=ATOL)
    streams = [a2v.stream(48_000) for _ in range(4)]
    singles = [a2v.stream(48_000) for _ in range(4)]
    x = _audio(1.0, 48_000, seed=9)
    for i in range(0, len(x), 1920):
        chunks = [x[i : i + 1920] * (k + 1) * 0.5 for k in range(4)]
        together = a2v.push_batch(streams, chunks)
        alone = [s.push(c) for s, c in zip(singles, chunks, strict=True)]
        for t, a in zip(together, alone, strict=True):
            np.testing.assert_allclose(t, a, rtol=0, atol=ATOL)


def test_silence_keeps_the_mouth_closed(a2v: A2V) -> None:
    out = a2v.infer(np.zeros(48_000, np.float32), 48_000)
    assert np.all(out[:, JAW_OPEN_INDEX] < 0.1)
    assert np.all(out[:, SPEECH_INDEX] < 0.5)
    assert np.all(out[:, 0] > 0.5)  # viseme "sil"


def test_fallback_chain_lands_on_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    has_gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    with caplog.at_level(logging.INFO, logger="engines.a2v.runtime"):
        model = load_a2v("tensorrt")
    if not has_gpu:
        assert model.runtime == "onnx-cpu"
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "tensorrt not usable" in messages and "onnx-cuda not usable" in messages
        assert "running on onnx-cpu (asked for tensorrt)" in messages
        with pytest.raises(A2VError):
            load_a2v("tensorrt", strict=True)
        with pytest.raises(A2VError):
            load_a2v("onnx-cuda", strict=True)
    with pytest.raises(A2VError):
        load_a2v("nonsense")


def test_bad_input_is_refused(a2v: A2V) -> None:
    with pytest.raises(A2VError):
        a2v.infer(np.zeros((2, 100), np.float32), 16_000)
    with pytest.raises(A2VError):
        a2v.infer(np.zeros(100, np.int16), 16_000)

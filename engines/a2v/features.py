"""Streaming log-mel features for a2v (numpy only; the same code in training and inference).

Audio at any rate is resampled to 16 kHz (soxr; its streaming output equals its
one-shot output exactly). Mel frame ``i`` is a 25 ms Hann window that *ends*
at sample ``(i + 1) * 160`` (10 ms hop; the signal is zero-padded on the
left), so frame ``i`` is complete as soon as 10 ms × (i + 1) of audio has
arrived: the features themselves add no lookahead. ``N`` samples give exactly
``N // 160`` frames, and :class:`LogMelStream` fed in chunks of any size
returns the same frames as :func:`log_mel` on the whole signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 40
F_MIN = 60.0
F_MAX = 7_600.0
LOG_FLOOR = 1e-6
FRAME_RATE = SAMPLE_RATE // HOP  # 100 mel frames per second


class FeatureError(ValueError):
    """Audio passed to the feature extractor is malformed."""


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """Triangular HTK-style mel filters: ``[N_FFT // 2 + 1, N_MELS]`` float32."""
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), N_MELS + 2))
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None, :]) / (center - lower)[None, :]
    down = (upper[None, :] - freqs[:, None]) / (upper - center)[None, :]
    fb = np.clip(np.minimum(up, down), 0.0, None)
    fb *= (2.0 / (upper - lower))[None, :]  # equal area per filter
    return fb.astype(np.float32)


@dataclass(frozen=True)
class _Tables:
    window: np.ndarray = field(default_factory=lambda: np.hanning(WIN + 1)[:WIN].astype(np.float32))
    filters: np.ndarray = field(default_factory=mel_filterbank)


def _frames_to_logmel(frames: np.ndarray, tables: _Tables) -> np.ndarray:
    """``frames [T, WIN]`` float32 → ``[T, N_MELS]`` float32 natural-log mel energies."""
    spec = np.fft.rfft(frames * tables.window[None, :], n=N_FFT, axis=1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    return np.log(np.maximum(power @ tables.filters, LOG_FLOOR)).astype(np.float32)


def _check_pcm(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim != 1:
        raise FeatureError(f"expected mono PCM of shape [N], got shape {pcm.shape}")
    if not np.issubdtype(pcm.dtype, np.floating):
        raise FeatureError(
            f"expected float PCM in [-1, 1], got dtype {pcm.dtype} (convert int16 with /32768)"
        )
    return pcm.astype(np.float32, copy=False)


def log_mel(pcm16k: np.ndarray) -> np.ndarray:
    """Whole-signal features: ``pcm16k [N]`` float32 at 16 kHz → ``[N // 160, N_MELS]`` float32."""
    pcm = _check_pcm(pcm16k)
    stream = LogMelStream()
    return stream.push(pcm)


class LogMelStream:
    """Chunked feature extraction with exactly the frames of :func:`log_mel`."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._buf = np.zeros(WIN - HOP, dtype=np.float32)  # left context (zeros at the start)

    def push(self, pcm16k: np.ndarray) -> np.ndarray:
        """Add 16 kHz samples; return the frames completed by them: ``[k, N_MELS]`` float32."""
        pcm = _check_pcm(pcm16k)
        buf = np.concatenate([self._buf, pcm])
        n = (len(buf) - (WIN - HOP)) // HOP
        if n <= 0:
            self._buf = buf
            return np.zeros((0, N_MELS), dtype=np.float32)
        idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
        out = _frames_to_logmel(buf[idx], self._tables)
        self._buf = buf[n * HOP :].copy()
        return out


class Resampler:
    """Streaming resampler to 16 kHz (identity at 16 kHz); chunked output equals one-shot output."""

    def __init__(self, sample_rate: int) -> None:
        if not isinstance(sample_rate, int) or sample_rate < 4_000:
            raise FeatureError(f"sample_rate must be an integer >= 4000 Hz, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self._stream = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def push(self, pcm: np.ndarray) -> np.ndarray:
        pcm = _check_pcm(pcm)
        if self._stream is None:
            return pcm
        return np.asarray(self._stream.resample_chunk(pcm), dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)


def resample(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Whole-signal resampling to 16 kHz, identical to :class:`Resampler` fed in chunks."""
    r = Resampler(sample_rate)
    return np.concatenate([r.push(pcm), r.flush()])

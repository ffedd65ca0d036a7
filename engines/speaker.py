"""Speaker similarity without torch: Resemblyzer's GE2E speaker encoder run with numpy.

:func:`embed` turns speech (any rate, mono float) into a 256-d L2-normalised
voice embedding; the cosine of two embeddings says how alike two voices
sound (same speaker ≈ 0.8-0.95, different speakers lower). The weights are
Resemblyzer's (Apache-2.0), exported once by ``python -m export.speaker_encoder``
into ``engines/data/speaker_encoder.npz`` (2.7 MB).

Front end as Resemblyzer's: 16 kHz, volume raised to -30 dBFS, long silences
trimmed (here by an energy gate; Resemblyzer uses webrtcvad), a 40-channel mel
power spectrogram (25 ms Hann window, 10 ms hop, Slaney mel scale and norm,
as librosa's defaults), partial utterances of 160 frames (1.6 s) at 1.3 per
second through a 3-layer LSTM (256) and a linear + ReLU layer, averaged.

:func:`closest_voice` picks, of several Piper voices, the one whose speech is
closest to a recording of a person (the avatar's voice from an uploaded video).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engines.assets import DATA_DIR

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_S = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
WEIGHTS = DATA_DIR / "speaker_encoder.npz"


class SpeakerError(ValueError):
    """The speaker encoder cannot run on this input (or its weights are missing)."""


# --------------------------------------------------------------------------- front end


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * (200.0 / 3))


@functools.cache
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] float64 triangular filters, Slaney-normalised (librosa's defaults)."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sr / 2)), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def mel_power(wav: np.ndarray) -> np.ndarray:
    """[frames, 40] float32 mel power spectrogram (centred frames, zero padding, periodic Hann window)."""
    pad = N_FFT // 2
    x = np.pad(np.asarray(wav, dtype=np.float64), (pad, pad))
    n = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2  # [n, 201]
    return (spec @ mel_filterbank().T).astype(np.float32)


def resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Mono float audio at ``rate`` → 16 kHz float32."""
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if rate == SAMPLE_RATE:
        return pcm
    import soxr

    return np.asarray(soxr.resample(pcm, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)


def preprocess(pcm: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz, raised to -30 dBFS (never lowered), silences longer than ~0.2 s trimmed."""
    wav = resample(pcm, rate)
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) if len(wav) else 0.0
    if rms <= 1e-6:
        raise SpeakerError("the audio is silent")
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    if gain_db > 0:
        wav = wav * np.float32(10 ** (gain_db / 20))
    # energy gate on 30 ms windows, smoothed, with a margin of 6 windows kept around speech
    win = 480
    n = len(wav) // win
    if n == 0:
        return wav
    frames = wav[: n * win].reshape(n, win)
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    voiced = energy > max(float(np.percentile(energy, 95)) - 35.0, -70.0)
    keep = np.convolve(voiced.astype(np.float64), np.ones(13), mode="full")[6 : 6 + n] > 0  # ±6 windows
    return frames[keep].reshape(-1) if keep.any() else wav


# --------------------------------------------------------------------------- the network


@functools.cache
def _weights(path: Path = WEIGHTS) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SpeakerError(
            f"speaker encoder weights not found at {path}; rebuild them with `python -m export.speaker_encoder`"
        )
    with np.load(path) as data:
        return {k: data[k].astype(np.float32) for k in data.files if k != "source"}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def encode_partials(mels: np.ndarray) -> np.ndarray:
    """mels [B, T, 40] float32 → embeddings [B, 256] (LSTM last hidden → linear → ReLU → L2 norm)."""
    w = _weights()
    x = np.asarray(mels, dtype=np.float32)
    batch, steps, _ = x.shape
    for layer in range(3):
        w_ih, w_hh = w[f"lstm_weight_ih_l{layer}"], w[f"lstm_weight_hh_l{layer}"]
        bias = w[f"lstm_bias_ih_l{layer}"] + w[f"lstm_bias_hh_l{layer}"]
        hidden = w_hh.shape[1]
        gates_x = x @ w_ih.T + bias  # [B, T, 4H], input part for every step at once
        h = np.zeros((batch, hidden), np.float32)
        c = np.zeros((batch, hidden), np.float32)
        out = np.empty((batch, steps, hidden), np.float32)
        for t in range(steps):
            g = gates_x[:, t] + h @ w_hh.T
            i, f, gg, o = (g[:, k * hidden : (k + 1) * hidden] for k in range(4))  # torch's gate order
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
            h = _sigmoid(o) * np.tanh(c)
            out[:, t] = h
        x = out
    raw = np.maximum(0.0, h @ w["linear_weight"].T + w["linear_bias"])
    return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)


def _partial_slices(n_samples: int) -> list[slice]:
    """Resemblyzer's partial utterances (mel frame ranges) over ``n_samples`` of 16 kHz audio."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / PARTIALS_PER_S) / HOP))
    slices = [
        slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    ]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / ((last.stop - last.start) * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


def embed(pcm: np.ndarray, rate: int, preprocessed: bool = False) -> np.ndarray:
    """A 256-d L2-normalised embedding of the voice in ``pcm`` (mono float at ``rate``)."""
    wav = pcm if preprocessed else preprocess(pcm, rate)
    if len(wav) < SAMPLE_RATE // 2:
        raise SpeakerError(
            f"{len(wav) / SAMPLE_RATE:.2f} s of speech is too little to tell a voice (0.5 s at least)"
        )
    slices = _partial_slices(len(wav))
    need = slices[-1].stop * HOP
    if need > len(wav):
        wav = np.pad(wav, (0, need - len(wav)))
    mel = mel_power(wav)
    mels = np.stack([mel[s] for s in slices])
    partial = encode_partials(mels)
    mean = partial.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def closest_voice(person: np.ndarray, voices: Mapping[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    """(the id of the voice embedding closest to ``person``, every voice's similarity)."""
    if not voices:
        raise SpeakerError("no voices to choose from")
    scores = {vid: round(similarity(person, emb), 4) for vid, emb in voices.items()}
    return max(scores, key=lambda k: scores[k]), scores

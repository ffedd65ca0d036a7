"""Audio augmentation that makes a2v serve voices other than the one it was trained on.

Every function takes and returns mono float32 PCM at 16 kHz. Time-changing
transforms (:func:`speed`, :func:`time_stretch`) report the factor by which
durations changed so labels can be re-timed; the others keep timing exactly
(reverb tails are cut, the Opus codec delay is removed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from engines.a2v.features import SAMPLE_RATE

logger = logging.getLogger(__name__)

_N_FFT = 512
_HOP = 128


class AugmentError(RuntimeError):
    """An augmentation could not run (e.g. PyAV without libopus)."""


def _stft(x: np.ndarray) -> np.ndarray:
    """``x [N]`` → complex ``[T, N_FFT // 2 + 1]`` (Hann, hop 128, centred with reflect-free zero padding)."""
    win = np.hanning(_N_FFT + 1)[:_N_FFT].astype(np.float32)
    pad = np.concatenate([np.zeros(_N_FFT // 2, np.float32), x, np.zeros(_N_FFT, np.float32)])
    n = 1 + (len(pad) - _N_FFT) // _HOP
    idx = np.arange(_N_FFT)[None, :] + _HOP * np.arange(n)[:, None]
    return np.fft.rfft(pad[idx] * win[None, :], axis=1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`, trimmed to ``length`` samples."""
    win = np.hanning(_N_FFT + 1)[:_N_FFT]
    frames = np.fft.irfft(spec, n=_N_FFT, axis=1) * win[None, :]
    total = _HOP * (len(frames) - 1) + _N_FFT
    out = np.zeros(total)
    norm = np.zeros(total)
    for i, f in enumerate(frames):
        out[i * _HOP : i * _HOP + _N_FFT] += f
        norm[i * _HOP : i * _HOP + _N_FFT] += win**2
    out /= np.maximum(norm, 1e-6)
    out = out[_N_FFT // 2 : _N_FFT // 2 + length]
    if len(out) < length:
        out = np.pad(out, (0, length - len(out)))
    return out.astype(np.float32)


def speed(x: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Play ``factor`` times faster: pitch and formants up by ``factor``. Returns (audio, duration factor)."""
    import soxr

    y = soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return y, len(y) / max(len(x), 1)


def time_stretch(x: np.ndarray, rate: float) -> tuple[np.ndarray, float]:
    """Phase-vocoder tempo change (``rate`` > 1 faster) keeping pitch. Returns (audio, duration factor)."""
    spec = _stft(x)
    n = len(spec)
    steps = np.arange(0.0, n - 1, rate)
    mag = np.abs(spec)
    phase = np.angle(spec)
    expected = 2 * np.pi * _HOP * np.arange(spec.shape[1]) / _N_FFT
    acc = phase[0].copy()
    out = np.zeros((len(steps), spec.shape[1]), dtype=np.complex128)
    for i, s in enumerate(steps):
        j = int(s)
        frac = s - j
        m = (1 - frac) * mag[j] + frac * mag[j + 1]
        out[i] = m * np.exp(1j * acc)
        dphi = phase[j + 1] - phase[j] - expected
        dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
        acc += expected + dphi
    length = round(len(x) / rate)
    return _istft(out, length), length / max(len(x), 1)


def formant_shift(x: np.ndarray, factor: float, lifter: int = 24) -> np.ndarray:
    """Move the spectral envelope (formants) by ``factor`` while keeping pitch harmonics in place."""
    spec = _stft(x)
    logmag = np.log(np.abs(spec) + 1e-7)
    ceps = np.fft.irfft(logmag, axis=1)
    ceps[:, lifter:-lifter] = 0.0
    env = np.fft.rfft(ceps, axis=1).real  # [T, F] smooth log envelope
    bins = np.arange(spec.shape[1], dtype=np.float64)
    warped = np.stack([np.interp(bins / factor, bins, e) for e in env])
    gain = np.exp(np.clip(warped - env, -6.0, 6.0))
    return _istft(spec * gain, len(x))


def equalize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random peaking bands, optional high-pass (≤ 200 Hz) and low-pass (≥ 4.5 kHz)."""
    from scipy import signal

    y = x.astype(np.float64)
    for _ in range(int(rng.integers(1, 4))):
        f0 = float(np.exp(rng.uniform(np.log(150.0), np.log(6000.0))))
        gain_db = float(rng.uniform(-9.0, 9.0))
        q = float(rng.uniform(0.5, 2.0))
        a = 10 ** (gain_db / 40)
        w0 = 2 * np.pi * f0 / SAMPLE_RATE
        alpha = np.sin(w0) / (2 * q)
        b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
        den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
        y = signal.lfilter(b / den[0], den / den[0], y)
    if rng.random() < 0.5:
        sos = signal.butter(2, float(rng.uniform(60.0, 200.0)), "highpass", fs=SAMPLE_RATE, output="sos")
        y = signal.sosfilt(sos, y)
    if rng.random() < 0.5:
        sos = signal.butter(4, float(rng.uniform(4500.0, 7500.0)), "lowpass", fs=SAMPLE_RATE, output="sos")
        y = signal.sosfilt(sos, y)
    return y.astype(np.float32)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Coloured noise (white, pink or brown) at ``snr_db`` below the speech power."""
    n = len(x)
    spec = np.fft.rfft(rng.standard_normal(n))
    beta = float(rng.choice([0.0, 1.0, 2.0]))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec /= np.maximum(freqs, 20.0) ** (beta / 2)
    noise = np.fft.irfft(spec, n=n)
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) + 1e-10
    p_noise = float(np.mean(noise**2)) + 1e-12
    noise *= np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Synthetic room: exponentially decaying noise impulse response, direct path kept, tail cut."""
    from scipy import signal

    length = int(min(rt60, 0.6) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    ir *= float(rng.uniform(0.2, 0.8)) / (np.sqrt(np.sum(ir**2)) + 1e-9)
    ir[0] = 1.0
    y = signal.fftconvolve(x, ir)[: len(x)]
    return (y / max(1.0, float(np.max(np.abs(y))) / max(float(np.max(np.abs(x))), 1e-6))).astype(np.float32)


def opus_round_trip(x: np.ndarray, bitrate: int) -> np.ndarray:
    """Encode with libopus (PyAV) at ``bitrate`` b/s and decode again, codec delay removed."""
    import av

    try:
        enc = av.CodecContext.create("libopus", "w")
    except Exception as exc:  # PyAV raises its own error types per build
        raise AugmentError(f"PyAV has no libopus encoder ({exc}); install a PyAV wheel with Opus") from exc
    enc.sample_rate = SAMPLE_RATE
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = bitrate
    enc.open()
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate = SAMPLE_RATE
    dec.layout = "mono"
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    frame_len = SAMPLE_RATE // 50
    padded = np.concatenate([pcm, np.zeros(frame_len * 4 - len(pcm) % frame_len, np.int16)])
    out: list[np.ndarray] = []
    rates = [SAMPLE_RATE]

    def decode(packets: list[av.Packet]) -> None:
        for p in packets:
            for f in dec.decode(p):
                rates[0] = f.sample_rate  # libopus decodes at 48 kHz
                samples = f.to_ndarray().astype(np.float32).reshape(-1)
                out.append(samples / 32768.0 if f.format.name.startswith("s16") else samples)

    for i in range(0, len(padded), frame_len):
        frame = av.AudioFrame.from_ndarray(padded[None, i : i + frame_len], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i
        decode(list(enc.encode(frame)))
    decode(list(enc.encode(None)))
    y = np.concatenate(out).astype(np.float32)
    if rates[0] != SAMPLE_RATE:
        import soxr

        y = soxr.resample(y, rates[0], SAMPLE_RATE, quality="HQ").astype(np.float32)
    # find the codec delay by cross-correlation (search 0..40 ms)
    search = int(0.04 * SAMPLE_RATE)
    ref = x[: min(len(x), SAMPLE_RATE * 2)]
    best, best_lag = -np.inf, 0
    for lag in range(0, search):
        seg = y[lag : lag + len(ref)]
        if len(seg) < len(ref):
            break
        c = float(np.dot(seg, ref))
        if c > best:
            best, best_lag = c, lag
    y = y[best_lag : best_lag + len(x)]
    if len(y) < len(x):
        y = np.pad(y, (0, len(x) - len(y)))
    return y.astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """Narrow-band phone line: 300–3400 Hz band-pass, 8 kHz mu-law round trip (held-out family)."""
    import soxr
    from scipy import signal

    sos = signal.butter(4, [300.0, 3400.0], "bandpass", fs=SAMPLE_RATE, output="sos")
    y = signal.sosfilt(sos, x.astype(np.float64))
    y8 = soxr.resample(y, SAMPLE_RATE, 8000)
    mu = 255.0
    enc = np.sign(y8) * np.log1p(mu * np.abs(np.clip(y8, -1, 1))) / np.log1p(mu)
    q = np.round(enc * 127) / 127
    dec = np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu
    out = soxr.resample(dec, 8000, SAMPLE_RATE)[: len(x)]
    return np.pad(out, (0, len(x) - len(out))).astype(np.float32)


@dataclass
class AugmentPlan:
    """One random chain; ``ops`` records what was applied (for the corpus card)."""

    ops: list[str] = field(default_factory=list)
    duration_factor: float = 1.0


def random_timing(x: np.ndarray, rng: np.random.Generator, plan: AugmentPlan) -> np.ndarray:
    """Timing-changing part of a chain: speed (pitch+formant) and/or phase-vocoder tempo, or a formant shift."""
    if rng.random() < 0.6:
        f = float(rng.uniform(0.88, 1.15))
        x, d = speed(x, f)
        plan.ops.append(f"speed{f:.2f}")
        plan.duration_factor *= d
    if rng.random() < 0.4:
        r = float(rng.uniform(0.85, 1.2))
        x, d = time_stretch(x, r)
        plan.ops.append(f"tempo{r:.2f}")
        plan.duration_factor *= d
    if rng.random() < 0.35:
        f = float(rng.uniform(0.85, 1.2))
        x = formant_shift(x, f)
        plan.ops.append(f"formant{f:.2f}")
    return x


def random_channel(x: np.ndarray, rng: np.random.Generator, plan: AugmentPlan) -> np.ndarray:
    """Timing-preserving part of a chain: EQ, reverb, noise, Opus, level."""
    if rng.random() < 0.6:
        x = equalize(x, rng)
        plan.ops.append("eq")
    if rng.random() < 0.35:
        rt = float(rng.uniform(0.15, 0.7))
        x = reverb(x, rng, rt)
        plan.ops.append(f"reverb{rt:.2f}")
    if rng.random() < 0.5:
        snr = float(rng.uniform(8.0, 40.0))
        x = add_noise(x, rng, snr)
        plan.ops.append(f"noise{snr:.0f}dB")
    if rng.random() < 0.3:
        br = int(rng.choice([12_000, 16_000, 24_000, 32_000]))
        x = opus_round_trip(x, br)
        plan.ops.append(f"opus{br // 1000}k")
    gain_db = float(rng.uniform(-30.0, 8.0))
    x = np.clip(x * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)
    plan.ops.append(f"gain{gain_db:+.0f}dB")
    return x

"""Signal analysis for the receive-side benchmarks: intervals, mouth-open onsets, A/V offset.

Everything here works on what an aiortc client recorded (receive times from
``time.monotonic()``), is pure numpy and is unit-tested on synthetic signals.

Mouth opening from pixels
    The client records the mean luminance of the avatar's mouth box (from the
    avatar metadata, scaled to the video size) in every frame. While the avatar
    is idle that value only wobbles (head drift, blinks, codec noise); an open
    mouth shows the dark inner mouth and teeth, which moves it far more. The
    *mouth-opening signal* is ``sign · (luma − baseline)`` where ``baseline`` is
    the median over an idle window and ``sign`` is chosen so that speaking makes
    it positive. A frame shows the mouth *open* when the signal exceeds
    ``max(k · 1.4826 · MAD_idle, min_delta)`` (a robust z-score threshold,
    ``k = 4``; ``min_delta`` keeps a perfectly still idle window from making
    codec noise count as an opening).

A/V offset
    The received audio envelope (RMS of the packets received in each frame
    interval, stamped at the interval's middle) and the mouth-opening signal
    are put on one uniform 5 ms grid of receive time, lose their 0.5 s moving
    average (speech/silence blocks would correlate at every lag), are z-scored
    and cross-correlated over lags of ±300 ms; the lag
    of the peak (refined by a parabola through its neighbours) is the offset.
    **Positive = audio after video.** An aiortc receiver hands out decoded
    audio ~33 ms later than video sent at the same instant (jitter-buffer
    prefetch, FACTS.md), so the figure a browser would see is
    ``raw − AIORTC_AUDIO_DELAY_MS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AIORTC_AUDIO_DELAY_MS = 33.0  # aiortc's receiver delivers audio this much after video sent together
MAD_TO_SIGMA = 1.4826
GRID_S = 0.005


DETREND_S = 0.5


def _detrend(x: np.ndarray, window_s: float, grid_s: float) -> np.ndarray:
    """``x`` minus its centred moving average over ``window_s`` (no-op for ``window_s <= 0``)."""
    n = round(window_s / grid_s) | 1
    if window_s <= 0 or n >= x.size:
        return x
    pad = np.pad(x, n // 2, mode="edge")
    kernel = np.ones(n) / n
    return x - np.convolve(pad, kernel, mode="valid")


class AnalysisError(ValueError):
    """The recorded signals are too short or empty for this measurement."""


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` (linear interpolation); NaN for an empty input."""
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(a, list(qs)), strict=True)}


@dataclass(frozen=True)
class IntervalStats:
    fps: float  # frames per second over the window
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    count: int


def interval_stats(times: Sequence[float] | np.ndarray) -> IntervalStats:
    """Frame-interval statistics of receive times (seconds, increasing)."""
    t = np.asarray(times, np.float64)
    if t.size < 2:
        raise AnalysisError(f"need at least 2 frame times, got {t.size}")
    d = np.diff(t) * 1000.0
    p = percentiles(d)
    return IntervalStats(
        fps=float((t.size - 1) / (t[-1] - t[0])) if t[-1] > t[0] else 0.0,
        p50_ms=p["p50"],
        p95_ms=p["p95"],
        p99_ms=p["p99"],
        max_ms=float(d.max()),
        count=int(t.size),
    )


def fps_series(
    times: Sequence[float] | np.ndarray, start: float, end: float, bin_s: float = 1.0
) -> np.ndarray:
    """Frames received in each ``bin_s`` window from ``start`` to ``end``, as a rate (fps) per bin."""
    t = np.asarray(times, np.float64)
    edges = np.arange(start, end + 1e-9, bin_s)
    if edges.size < 2:
        return np.zeros(0, np.float64)
    counts, _ = np.histogram(t, bins=edges)
    return counts.astype(np.float64) / bin_s  # [bins]


def dropped_frames(pts: Sequence[int] | np.ndarray, step: int) -> int:
    """Frames missing at the receiver: pts jumps larger than one frame step (90 kHz ``step``)."""
    p = np.asarray(pts, np.int64)
    if p.size < 2:
        return 0
    d = np.diff(p)
    return int(np.sum(np.maximum(0, np.round(d / step).astype(np.int64) - 1)))


def audio_gaps(times: Sequence[float] | np.ndarray, packet_s: float = 0.02, factor: float = 3.0) -> int:
    """Receive gaps longer than ``factor`` packet times between consecutive audio packets."""
    t = np.asarray(times, np.float64)
    if t.size < 2:
        return 0
    return int(np.sum(np.diff(t) > factor * packet_s))


@dataclass(frozen=True)
class MouthBaseline:
    median: float
    mad: float
    sign: float  # +1: luminance rises when the mouth opens, -1: it falls

    def signal(self, luma: np.ndarray) -> np.ndarray:
        """Mouth-opening signal (luma units, positive = open) for mouth-box luminances."""
        return self.sign * (np.asarray(luma, np.float64) - self.median)

    def threshold(self, k: float = 4.0, min_delta: float = 1.0) -> float:
        return max(k * MAD_TO_SIGMA * self.mad, min_delta)


def mouth_baseline(idle: np.ndarray, speaking: np.ndarray) -> MouthBaseline:
    """Baseline of the idle mouth box and the direction that an open mouth moves it."""
    idle = np.asarray(idle, np.float64)
    speaking = np.asarray(speaking, np.float64)
    if idle.size < 3:
        raise AnalysisError(f"need at least 3 idle frames for a mouth baseline, got {idle.size}")
    med = float(np.median(idle))
    mad = float(np.median(np.abs(idle - med)))
    if speaking.size:
        # the direction of the largest excursions while speaking (robust to a few bright/dark frames)
        dev = speaking - med
        hi, lo = np.percentile(dev, 95), np.percentile(dev, 5)
        sign = 1.0 if abs(hi) >= abs(lo) else -1.0
    else:
        sign = 1.0
    return MouthBaseline(med, mad, sign)


def mouth_open_onset(
    times: np.ndarray,
    luma: np.ndarray,
    baseline: MouthBaseline,
    after: float,
    until: float | None = None,
    k: float = 4.0,
    min_delta: float = 1.0,
    hold: int = 2,
) -> float | None:
    """Receive time of the first *opening* after ``after``: open for ``hold`` frames in a row, after a closed frame.

    A mouth still open at ``after`` (the previous reply, or a frozen frame)
    does not count until it has been seen closed.
    """
    t = np.asarray(times, np.float64)
    sig = baseline.signal(luma)
    thr = baseline.threshold(k, min_delta)
    window = t >= after
    if until is not None:
        window &= t <= until
    hold = max(1, hold)
    seen_closed, run = False, 0
    for i in np.flatnonzero(window):
        if sig[i] > thr:
            run = run + 1 if seen_closed else 0
            if run >= hold:
                return float(t[i - hold + 1])
        else:
            seen_closed, run = True, 0
    return None


def envelope_on_frames(
    frame_t: np.ndarray, audio_t: np.ndarray, audio_rms: np.ndarray
) -> np.ndarray:  # [len(frame_t)] float64
    """RMS of the audio packets received in each video frame interval ``[t_i, t_{i+1})``."""
    ft = np.asarray(frame_t, np.float64)
    at = np.asarray(audio_t, np.float64)
    ar = np.asarray(audio_rms, np.float64)
    idx = np.searchsorted(ft, at, side="right") - 1  # frame interval each packet fell into
    ok = (idx >= 0) & (idx < ft.size)
    power = np.zeros(ft.size)
    count = np.zeros(ft.size)
    np.add.at(power, idx[ok], ar[ok] ** 2)
    np.add.at(count, idx[ok], 1.0)
    env = np.sqrt(power / np.maximum(count, 1.0))
    # a frame interval without a packet takes its neighbour's value (packets are 20 ms, frames 40 ms)
    empty = count == 0
    if empty.any() and (~empty).any():
        env[empty] = np.interp(np.flatnonzero(empty), np.flatnonzero(~empty), env[~empty])
    return env


@dataclass(frozen=True)
class Offset:
    lag_ms: float  # positive: audio after video
    corr: float  # normalised cross-correlation at the peak (−1..1)
    lags_ms: np.ndarray  # [L]
    curve: np.ndarray  # [L] correlation per lag


def av_offset(
    video_t: np.ndarray,
    mouth: np.ndarray,
    env_t: np.ndarray,
    envelope: np.ndarray,
    max_lag_ms: float = 300.0,
    grid_s: float = GRID_S,
    detrend_s: float = DETREND_S,
) -> Offset:
    """Lag of the audio envelope behind the mouth-opening signal (see module docstring).

    Both signals first lose their moving average over ``detrend_s`` (speech vs.
    silence blocks would otherwise correlate at every lag and flatten the peak).
    """
    vt = np.asarray(video_t, np.float64)
    et = np.asarray(env_t, np.float64)
    if vt.size < 10 or et.size < 10:
        raise AnalysisError("need at least 10 samples of both signals for an A/V offset")
    start, end = max(vt[0], et[0]), min(vt[-1], et[-1])
    max_lag = max_lag_ms / 1000.0
    if end - start < 4 * max_lag:
        raise AnalysisError(f"the signals overlap for {end - start:.2f} s; need at least {4 * max_lag:.2f} s")
    grid = np.arange(start, end, grid_s)  # [G]
    m = _detrend(np.interp(grid, vt, np.asarray(mouth, np.float64)), detrend_s, grid_s)
    a = _detrend(np.interp(grid, et, np.asarray(envelope, np.float64)), detrend_s, grid_s)
    m = (m - m.mean()) / (m.std() or 1.0)
    a = (a - a.mean()) / (a.std() or 1.0)
    n_lag = round(max_lag / grid_s)
    lags = np.arange(-n_lag, n_lag + 1)  # [L] in grid steps
    curve = np.empty(lags.size)
    for i, lag in enumerate(lags):
        # corr(lag) = mean(m(t) · a(t + lag)): peaks at lag = d when audio(t) = mouth(t − d)
        if lag >= 0:
            x, y = m[: m.size - lag], a[lag:]
        else:
            x, y = m[-lag:], a[: a.size + lag]
        curve[i] = float(np.mean(x * y)) if x.size else 0.0
    best = int(np.argmax(curve))
    if best in (0, curve.size - 1):
        raise AnalysisError(
            f"the correlation peaks at the edge of ±{max_lag_ms:g} ms: no A/V offset within range "
            "(signals unrelated, or an offset larger than the search range)"
        )
    shift = 0.0
    if 0 < best < curve.size - 1:  # parabolic refinement between grid steps
        c0, c1, c2 = curve[best - 1], curve[best], curve[best + 1]
        den = c0 - 2 * c1 + c2
        if den != 0:
            shift = float(np.clip(0.5 * (c0 - c2) / den, -0.5, 0.5))
    lag_ms = (float(lags[best]) + shift) * grid_s * 1000.0
    return Offset(lag_ms=lag_ms, corr=float(curve[best]), lags_ms=lags * grid_s * 1000.0, curve=curve)


def lagged_correlation(
    x: np.ndarray, y: np.ndarray, max_lag: int
) -> tuple[int, float, float]:  # (lag of y behind x in samples, corr at that lag, corr at lag 0)
    """Pearson correlation of two equal-rate series over integer lags (for per-frame signals)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    best_lag, best = 0, -np.inf
    zero = float("nan")
    for lag in range(-max_lag, max_lag + 1):
        a, b = (x[: n - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: n + lag])
        if a.size < 3 or a.std() == 0 or b.std() == 0:
            continue
        c = float(np.corrcoef(a, b)[0, 1])
        if lag == 0:
            zero = c
        if c > best:
            best_lag, best = lag, c
    return best_lag, float(best), zero

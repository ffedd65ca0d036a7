"""Streaming prosody for audio from any TTS: pitch, energy, pitch accents and phrase ends per video frame.

Audio (any rate, resampled to 16 kHz) is analysed every 10 ms: the
fundamental frequency by YIN's cumulative-mean-normalised difference
(60–400 Hz, 25 ms integration window, threshold 0.15, parabolic refinement)
and the level in dBFS. Each video frame ``k`` (media time ``[k/fps,
(k+1)/fps)``) gets the median f0 of its voiced hops and the RMS level of its
samples (:class:`ProsodyFrame`).

**Pitch accents.** A frame's *prominence* is how far its pitch has risen
above the lowest voiced pitch of the last ``TROUGH_S`` (a pitch accent rises
from a valley; measuring against the recent trough instead of a long-term
mean keeps accents late in a sentence visible despite its declination), in
units of ``ACCENT_ST`` semitones, weighted by how loud the frame is against
the running speech level (full weight within ``LOUDNESS_RANGE_DB`` below it).
Octave jumps of the tracker (> 9 semitones from the median of the last voiced
frames) are folded back. An accent starts at a frame whose
prominence is at least ``ACCENT_MIN`` and is the largest from
``PAST_FRAMES`` frames back to the last frame the lookahead lets us see, and
that comes at least ``REFRACTORY_S`` after the previous accent. Its strength
(0.3..1) grows with the prominence.

**Phrase ends.** A frame is a phrase end when ``PAUSE_S`` of quiet (level
``SILENCE_BELOW_DB`` under the speech level, or under ``SILENCE_FLOOR_DB``)
follow at least ``MIN_PHRASE_S`` of speech: pauses between phrases, where
people tend to blink.

**Bounded lookahead.** Frame ``k`` is given out once the audio reaches
``lookahead_s`` past the end of the frame and no later (the a2v network
already holds each frame back by its own lookahead, 80 ms, so emphasis costs
no extra latency on that path). Pushing the audio in chunks of any size gives
exactly the frames that pushing it in one piece gives.

The tracker knows nothing about text; on Piper's alignment path stressed
syllables come from the phonemes instead (:mod:`engines.expression.stress`),
and this tracker's accents rank them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from engines.a2v.features import Resampler

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
F0_MIN, F0_MAX = 50.0, 400.0
TAU_MIN = int(SAMPLE_RATE // F0_MAX)  # 40 samples
TAU_MAX = math.ceil(SAMPLE_RATE / F0_MIN)  # 320 samples
W = 400  # YIN integration window (25 ms)
N = W + TAU_MAX + 1  # samples one hop's analysis reads (721)
HALF = N // 2  # a hop's window is centred on its time: [c - HALF, c - HALF + N)
NFFT = 1152  # >= N + W - 1: linear (not circular) correlation; 2^7·3^2, a fast size for pocketfft
YIN_THRESHOLD = 0.15
VOICED_MAX_CMNDF = 0.4
VOICED_MIN_DB = -45.0  # quieter hops are unvoiced whatever their periodicity

TROUGH_S = 0.5  # prominence is measured from the lowest voiced pitch of this long before the frame
OCTAVE_FOLD_ST = 9.0
LEVEL_TAU_S = 1.0  # the speech level: running mean of voiced frame levels (dB)
ACCENT_ST = 2.0  # prominence 1 = this many semitones above the register
LOUDNESS_RANGE_DB = 9.0
ACCENT_MIN = 0.5
PAST_FRAMES = 2
REFRACTORY_S = 0.25
PAUSE_S = 0.12
MIN_PHRASE_S = 0.3
SILENCE_BELOW_DB = 25.0
SILENCE_FLOOR_DB = -50.0
DEFAULT_LOOKAHEAD_S = 0.08


class ProsodyError(ValueError):
    """Bad arguments to the prosody tracker."""


@dataclass(frozen=True)
class ProsodyFrame:
    """What the voice does in one video frame."""

    index: int  # k, counted from the start of the stream
    f0_hz: float  # median f0 of the voiced 10 ms hops (0.0: unvoiced)
    level_db: float  # RMS level in dBFS (-100 for digital silence)
    prominence: float  # pitch above the register × loudness, >= 0 (the accent track)
    accent: float  # 0: none; else the strength 0.3..1 of a pitch accent starting here
    phrase_end: bool  # a pause after a phrase starts being sure here


def _db(x: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(np.asarray(x, np.float64), 1e-10))


def yin_f0(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """YIN over hop windows ``[n, N]`` float → (f0 Hz ``[n]``, 0 when unvoiced; min CMNDF ``[n]``)."""
    x = np.asarray(windows, np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    spec_full = np.fft.rfft(x, NFFT)  # [n, NFFT/2+1]
    spec_head = np.fft.rfft(x[:, :W], NFFT)
    acf = np.fft.irfft(np.conj(spec_head) * spec_full, NFFT)[:, : TAU_MAX + 1]  # [n, T] sum x_j x_{j+tau}
    sq = np.concatenate([np.zeros((n, 1)), np.cumsum(x * x, axis=1)], axis=1)  # [n, N+1]
    taus = np.arange(TAU_MAX + 1)
    e0 = sq[:, W][:, None]
    e_tau = sq[:, taus + W] - sq[:, taus]
    d = np.maximum(e0 + e_tau - 2.0 * acf, 0.0)  # [n, T] difference function
    cum = np.cumsum(d[:, 1:], axis=1)
    cmndf = np.ones_like(d)
    cmndf[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    f0 = np.zeros(n)
    best = np.ones(n)
    for i in range(n):
        if sq[i, -1] < 1e-9 * N:  # (near) digital silence: no period to find
            continue
        c = cmndf[i]
        below = np.flatnonzero(c[TAU_MIN : TAU_MAX + 1] < YIN_THRESHOLD)
        if below.size:
            t = TAU_MIN + int(below[0])
            while t + 1 <= TAU_MAX and c[t + 1] < c[t]:
                t += 1
        else:
            t = TAU_MIN + int(np.argmin(c[TAU_MIN : TAU_MAX + 1]))
        best[i] = c[t]
        if c[t] > VOICED_MAX_CMNDF:
            continue
        shift = 0.0
        if TAU_MIN < t < TAU_MAX:
            a, b, cc = c[t - 1], c[t], c[t + 1]
            den = a - 2 * b + cc
            if den > 1e-12:
                shift = 0.5 * (a - cc) / den
        f0[i] = SAMPLE_RATE / (t + shift)
    return f0, best


class ProsodyTracker:
    """Streaming per-frame prosody of one utterance; see the module docstring.

    ``push(pcm)`` (float ``[N]`` at ``sample_rate``) returns the frames now
    final; ``flush()`` the rest, up to the frame holding the last sample.
    """

    def __init__(self, sample_rate: int, fps: int = 25, lookahead_s: float = DEFAULT_LOOKAHEAD_S) -> None:
        if not isinstance(fps, int) or not 1 <= fps <= 100:
            raise ProsodyError(f"fps must be an int in 1..100, got {fps!r}")
        if not 0.0 <= lookahead_s <= 1.0:
            raise ProsodyError(f"lookahead_s must be within 0..1 s, got {lookahead_s}")
        self.fps = fps
        self.sample_rate = sample_rate
        self.lookahead_s = float(lookahead_s)
        self._res = Resampler(sample_rate)
        self._spf = SAMPLE_RATE / fps  # 16 kHz samples per video frame (may be fractional)
        # audio at 16 kHz; _buf[0] is sample _base (negative at the start: zero padding before t = 0)
        self._buf = np.zeros(HALF, np.float32)
        self._base = -HALF
        self._n16 = 0  # 16 kHz samples received
        self._n_in = 0  # input samples received
        self._hops: list[float] = []  # f0 per computed hop (hop i centred on sample i·HOP)
        self._hop0 = 0  # index of _hops[0]
        self._feat: list[tuple[float, float, float]] = []  # (f0, level dB, semitones or nan) per known frame
        self._feat0 = 0  # frame index of _feat[0]
        self._prom: list[float] = []  # prominence of frames _feat0 .. (same length as _feat)
        self._out = 0  # frames given out
        self._finished = False
        # running statistics (updated in frame order as frames are given out)
        self._recent_st: deque[float] = deque(maxlen=5)  # last voiced semitones (octave folding)
        self._level: float | None = None  # dB
        self._last_accent = -(10**9)
        self._speech_run = 0.0  # seconds of speech in the current phrase
        self._quiet_run = 0.0  # seconds of quiet since the last speech
        self._trough_frames = max(1, round(TROUGH_S * fps))
        self._alpha_lvl = 1.0 - math.exp(-1.0 / (fps * LEVEL_TAU_S))

    @property
    def lookahead_frames(self) -> int:
        """Whole frames past frame k the accent decision may look at, within ``lookahead_s``."""
        window_s = (HALF + HOP) / SAMPLE_RATE  # the last hop of a frame reads this far past its end
        return max(0, math.floor((self.lookahead_s - window_s) * self.fps + 1e-9))

    # --- input ---------------------------------------------------------------------------------------
    def push(self, pcm: np.ndarray) -> list[ProsodyFrame]:
        if self._finished:
            raise ProsodyError("this tracker was flushed; make a new one for the next utterance")
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        self._n_in += len(pcm)
        self._append(self._res.push(pcm))
        return self._advance(final=False)

    def flush(self) -> list[ProsodyFrame]:
        if self._finished:
            return []
        self._append(self._res.flush())
        self._finished = True
        return self._advance(final=True)

    def _append(self, x: np.ndarray) -> None:
        if len(x):
            self._buf = np.concatenate([self._buf, x.astype(np.float32)])
            self._n16 += len(x)

    # --- analysis ------------------------------------------------------------------------------------
    def _total_frames(self) -> int:
        return -(-self._n_in * self.fps // self.sample_rate)

    def _samples(self, start: int, stop: int) -> np.ndarray:
        """16 kHz samples [start, stop), zeros outside what was received."""
        out = np.zeros(stop - start, np.float32)
        lo, hi = max(start, self._base), min(stop, self._base + len(self._buf))
        if hi > lo:
            out[lo - start : hi - start] = self._buf[lo - self._base : hi - self._base]
        return out

    def _compute_hops(self, final: bool) -> None:
        end = self._hop0 + len(self._hops)
        avail = self._n16 + (N if final else 0)  # at the end, what follows the audio is silence
        last = (avail - (N - HALF)) // HOP  # last hop whose window is complete
        if last < end:
            return
        idx = np.arange(end, last + 1)
        windows = np.stack([self._samples(int(c) * HOP - HALF, int(c) * HOP - HALF + N) for c in idx])
        f0, _ = yin_f0(windows)
        rms = np.sqrt(np.mean(windows[:, HALF - HOP // 2 : HALF + HOP // 2] ** 2, axis=1))
        f0[_db(rms**2) < VOICED_MIN_DB] = 0.0
        self._hops.extend(float(v) for v in f0)

    def _compute_frames(self, final: bool) -> None:
        self._compute_hops(final)
        hop_end = self._hop0 + len(self._hops)  # hops computed: [_hop0, hop_end)
        k = self._feat0 + len(self._feat)
        total = self._total_frames()
        while True:
            a, b = k * self._spf, (k + 1) * self._spf
            if final:
                if k >= total:
                    break
            elif b > self._n16:
                break
            h0, h1 = math.ceil(a / HOP), math.ceil(b / HOP)  # hops centred inside the frame
            if h1 > hop_end:
                break
            voiced = [f for f in self._hops[h0 - self._hop0 : h1 - self._hop0] if f > 0]
            f0 = float(np.median(voiced)) if len(voiced) >= max(1, (h1 - h0) // 2) else 0.0
            seg = self._samples(round(a), round(b))
            level = float(_db(float(np.mean(seg.astype(np.float64) ** 2)))) if len(seg) else -100.0
            self._feat.append((f0, level, self._semitones(f0)))
            self._prom.append(0.0)
            k += 1

    def _advance(self, final: bool) -> list[ProsodyFrame]:
        self._compute_frames(final)
        known = self._feat0 + len(self._feat)
        look = self.lookahead_frames
        out: list[ProsodyFrame] = []
        while self._out < known:
            k = self._out
            # the frame and the lookahead frames after it must be known (at the end: whatever exists)
            if not final and k + look >= known:
                break
            out.append(self._decide(k, min(known - 1, k + look)))
            self._out += 1
        self._trim()
        return out

    def _semitones(self, f0: float) -> float:
        """f0 in semitones re 100 Hz, octave jumps folded back towards the last voiced frames (nan: unvoiced)."""
        if f0 <= 0:
            return math.nan
        st = 12.0 * math.log2(f0 / 100.0)
        if self._recent_st:
            ref = float(np.median(self._recent_st))
            while st - ref > OCTAVE_FOLD_ST:
                st -= 12.0
            while ref - st > OCTAVE_FOLD_ST:
                st += 12.0
        self._recent_st.append(st)
        return st

    def _prominence(self, j: int) -> float:
        _, level, st = self._feat[j - self._feat0]
        if math.isnan(st) or self._level is None:
            return 0.0
        lo = max(self._feat0, j - self._trough_frames)
        trough = min(f[2] for f in self._feat[lo - self._feat0 : j + 1 - self._feat0] if not math.isnan(f[2]))
        loud = min(1.0, max(0.0, (level - (self._level - LOUDNESS_RANGE_DB)) / LOUDNESS_RANGE_DB))
        return min(2.0, max(0.0, (st - trough) / ACCENT_ST)) * loud

    def _decide(self, k: int, last_known: int) -> ProsodyFrame:
        f0, level, _ = self._feat[k - self._feat0]
        # the running speech level includes frame k itself (it describes the voice up to now)
        if f0 > 0:
            if self._level is None:
                self._level = level
            else:
                self._level += self._alpha_lvl * (level - self._level)
        # prominence of k and of the frames the lookahead shows (relative to the register now)
        for j in range(k, last_known + 1):
            self._prom[j - self._feat0] = self._prominence(j)
        p = self._prom[k - self._feat0]
        lo = max(self._feat0, k - PAST_FRAMES)
        window = self._prom[lo - self._feat0 : last_known + 1 - self._feat0]
        accent = 0.0
        refractory = round(REFRACTORY_S * self.fps)
        if p >= ACCENT_MIN and p >= max(window) and k - self._last_accent >= refractory:
            accent = min(1.0, 0.3 + 0.35 * p)
            self._last_accent = k
        # phrase ends: enough quiet after enough speech
        dt = 1.0 / self.fps
        quiet = level < SILENCE_FLOOR_DB or (
            self._level is not None and level < self._level - SILENCE_BELOW_DB
        )
        phrase_end = False
        if quiet:
            self._quiet_run += dt
            if self._speech_run >= MIN_PHRASE_S and self._quiet_run >= PAUSE_S - 1e-9:
                phrase_end = True
                self._speech_run = 0.0
        else:
            if self._quiet_run >= PAUSE_S - 1e-9:
                self._speech_run = 0.0
            self._quiet_run = 0.0
            self._speech_run += dt
        return ProsodyFrame(k, f0, level, p, accent, phrase_end)

    def _trim(self) -> None:
        """Forget audio, hops and frames no later decision needs."""
        keep_frame = max(self._feat0, self._out - max(PAST_FRAMES, self._trough_frames))
        drop = keep_frame - self._feat0
        if drop > 0:
            del self._feat[:drop]
            del self._prom[:drop]
            self._feat0 = keep_frame
        next_frame = self._feat0 + len(self._feat)
        keep_hop = max(self._hop0, math.ceil(next_frame * self._spf / HOP))
        drop = min(keep_hop - self._hop0, len(self._hops))
        if drop > 0:
            del self._hops[:drop]
            self._hop0 += drop
        keep_sample = min(self._hop0 * HOP - HALF, int(next_frame * self._spf))
        drop = keep_sample - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base = keep_sample


def analyse(pcm: np.ndarray, sample_rate: int, fps: int = 25) -> list[ProsodyFrame]:
    """The whole utterance at once (equals streaming it)."""
    t = ProsodyTracker(sample_rate, fps)
    return [*t.push(pcm), *t.flush()]

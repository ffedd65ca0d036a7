"""The person's speaking style, measured on a tracked clip, for the motion layers.

Stored in ``avatar.metadata["speaking_style"]`` (schema version 1; units in the
key names or below):

* ``mouth_gain``: {channel: gain} for the opening channels (:data:`GAIN_CHANNELS`). TTS-driven
  lips are multiplied by it while speaking, so they open as much as this
  person's do: gain = (the person's 95th percentile of the channel while
  speaking) / (the largest target any viseme gives that channel in
  :mod:`engines.a2v.visemes`), clipped to [0.4, 2.0];
* ``mouth_p95``: {channel: value} the person's 95th percentile while speaking
  (rig units, 0..1; ``lip_opening_ratio``: inner-lip opening over mouth width);
  the jawOpen gain comes from the lip opening itself when the builder gives it
  (the fit may share an opening between jawOpen and the lip channels);
* ``blink_rate_per_min``, ``blink_duration_s`` (median), ``blinks`` (count);
* ``head_sway_rms_deg``: {pitch, yaw, roll} RMS of the head angles about their
  4 s Hann-weighted moving mean (first null at 0.5 Hz) while speaking (all
  frames when no speech was found);
  ``head_drift_rms_deg``: the same for the slow part (the moving mean itself);
* ``head_sway_spectrum``: ``bands_hz`` (list of [lo, hi]) and, per axis, the
  fraction of the sway power in each band and ``peak_hz`` (the strongest
  frequency above 0.1 Hz);
* ``speaking_fraction`` (0..1), ``speech_from`` ("audio" when the clip's audio
  track told when the person speaks, "mouth" when mouth motion did),
  ``seconds`` (length of clip measured), ``fps``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.a2v.visemes import A2V_ARKIT_CHANNELS, viseme_target_table

logger = logging.getLogger(__name__)

STYLE_VERSION = 1
SWAY_BANDS_HZ: tuple[tuple[float, float], ...] = (
    (0.1, 0.25),
    (0.25, 0.5),
    (0.5, 1.0),
    (1.0, 2.0),
    (2.0, 4.0),
)
GAIN_RANGE = (0.4, 2.0)
#: Channels whose amplitude says how wide this person's mouth moves while speaking (closing and
#: compressing channels are not amplitudes: they are left to the lip-sync source).
GAIN_CHANNELS: tuple[str, ...] = (
    "jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight",
)  # fmt: skip
BLINK_ON = 0.5  # eyeBlink above this counts as closed
SLOW_WINDOW_S = 4.0  # head drift = Hann-weighted moving mean over this window; sway = the rest


def speech_activity_from_audio(
    path: str | Path, times: np.ndarray, window_s: float = 0.08
) -> np.ndarray | None:
    """[F] bool: the clip's audio is loud enough around each time to be speech (None without audio).

    Streams the audio track (PyAV), keeps one RMS value per 20 ms, and calls a
    frame speech when the smoothed RMS exceeds a threshold between the noise
    floor (10th percentile) and the loud speech level (95th percentile)."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        return None
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        hop = 320  # 20 ms at 16 kHz
        energies: list[float] = []
        buf = np.zeros(0, np.float32)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                buf = np.concatenate([buf, out.to_ndarray().reshape(-1).astype(np.float32)])
                n = len(buf) // hop
                if n:
                    chunk = buf[: n * hop].reshape(n, hop)
                    energies.extend(np.sqrt(np.mean(chunk**2, axis=1)).tolist())
                    buf = buf[n * hop :]
    except av.FFmpegError as exc:
        logger.warning("speaking_style: audio of %s unreadable (%s); using mouth motion", path, exc)
        return None
    finally:
        container.close()
    if len(energies) < 10:
        return None
    e = np.asarray(energies)
    k = max(1, round(window_s / 0.02))
    e = np.convolve(e, np.ones(k) / k, mode="same")
    lo, hi = np.percentile(e, 10), np.percentile(e, 95)
    if hi <= 1e-4 or hi < 3.0 * lo:  # silent track or no contrast: no usable speech information
        return None
    thr = lo + 0.15 * (hi - lo)
    # audio and video are taken to start together (the stream's first audio sample is t = 0)
    idx = np.clip((times / 0.02).astype(int), 0, len(e) - 1)
    return np.asarray(e[idx] > thr)


def speech_activity_from_mouth(jaw: np.ndarray, fps: float) -> np.ndarray:
    """[F] bool: the mouth moves (rolling std of the mouth opening over 0.6 s above a threshold)."""
    k = max(3, round(0.6 * fps))
    pad = np.pad(jaw, (k // 2, k - 1 - k // 2), mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, k)
    sd = win.std(axis=1)
    thr = max(0.03, 0.5 * float(np.median(sd)))
    return np.asarray(sd > thr)


def _blinks(blink: np.ndarray, fps: float) -> tuple[int, float]:
    closed = blink > BLINK_ON
    starts = np.flatnonzero(closed & ~np.concatenate([[False], closed[:-1]]))
    ends = np.flatnonzero(closed & ~np.concatenate([closed[1:], [False]]))
    durations = (ends - starts + 1) / fps
    keep = durations < 1.0  # longer: eyes closed on purpose, not a blink
    return int(keep.sum()), float(np.median(durations[keep])) if keep.any() else 0.0


def _spectrum(x: np.ndarray, fps: float) -> tuple[list[float], float]:
    x = x - x.mean()
    if len(x) < 16:
        return [0.0] * len(SWAY_BANDS_HZ), 0.0
    win = np.hanning(len(x))
    p = np.abs(np.fft.rfft(x * win)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / fps)
    total = float(p[(f >= SWAY_BANDS_HZ[0][0]) & (f < SWAY_BANDS_HZ[-1][1])].sum())
    fractions = [
        round(float(p[(f >= lo) & (f < hi)].sum()) / total, 4) if total > 0 else 0.0
        for lo, hi in SWAY_BANDS_HZ
    ]
    above = f >= 0.1
    peak = float(f[above][np.argmax(p[above])]) if above.any() else 0.0
    return fractions, round(peak, 3)


def reference_mouth_max() -> dict[str, float]:
    """The largest value any viseme target gives each a2v mouth/jaw channel."""
    table = viseme_target_table()
    return {name: float(table[:, i].max()) for i, name in enumerate(A2V_ARKIT_CHANNELS)}


def measure_style(
    channels: tuple[str, ...],
    params: np.ndarray,  # [F, C] fitted rig parameters of consecutive tracked frames
    times: np.ndarray,  # [F] seconds
    speaking: np.ndarray | None = None,  # [F] bool from the audio, or None
    aperture: tuple[np.ndarray, float] | None = None,  # ([F] lip opening / mouth width, rig's at jawOpen=1)
) -> dict[str, Any]:
    """The ``speaking_style`` metadata (see the module docstring) from fitted per-frame parameters.

    With ``aperture`` the jawOpen gain comes from the lips' opening itself (the person's 95th percentile
    while speaking over the opening the avatar's rig makes at the largest viseme jawOpen), which does not
    depend on how the fit shares an opening between jawOpen and the lip channels."""
    f_n = len(times)
    fps = (f_n - 1) / max(float(times[-1] - times[0]), 1e-3) if f_n > 1 else 25.0
    col = {c: i for i, c in enumerate(channels)}
    source = "audio"
    if speaking is None or not speaking.any():
        speaking = speech_activity_from_mouth(params[:, col["jawOpen"]], fps)
        source = "mouth"
    ref = reference_mouth_max()
    gain: dict[str, float] = {}
    p95: dict[str, float] = {}
    sel = speaking if speaking.sum() >= 10 else np.ones(f_n, bool)
    for name, top in ref.items():
        if name not in col or name not in GAIN_CHANNELS or top < 0.05:
            continue
        v = float(np.percentile(params[sel, col[name]], 95))
        p95[name] = round(v, 4)
        gain[name] = round(float(np.clip(v / top, *GAIN_RANGE)), 3)
    if aperture is not None and "jawOpen" in gain:
        opening, per_unit = aperture
        v = float(np.percentile(opening[sel], 95))
        p95["lip_opening_ratio"] = round(v, 4)
        gain["jawOpen"] = round(float(np.clip(v / max(per_unit * ref["jawOpen"], 1e-6), *GAIN_RANGE)), 3)
    blink = 0.5 * (params[:, col["eyeBlinkLeft"]] + params[:, col["eyeBlinkRight"]])
    n_blinks, blink_s = _blinks(blink, fps)
    minutes = max(float(times[-1] - times[0]), 1e-3) / 60.0
    head = np.degrees(params[:, [col["headPitch"], col["headYaw"], col["headRoll"]]].astype(np.float64))
    k = max(5, round(SLOW_WINDOW_S * fps)) | 1
    win = np.hanning(k + 2)[1:-1]
    win /= win.sum()
    pad = np.pad(head, ((k // 2, k // 2), (0, 0)), mode="edge")
    slow = np.stack([np.convolve(pad[:, a], win, mode="valid") for a in range(3)], axis=1)
    fast = head - slow
    rms = np.sqrt(np.mean(fast[sel] ** 2, axis=0))
    drift = np.sqrt(np.mean((slow - slow.mean(axis=0)) ** 2, axis=0))
    spectrum: dict[str, Any] = {"bands_hz": [list(b) for b in SWAY_BANDS_HZ]}
    peaks: dict[str, float] = {}
    for a, axis in enumerate(("pitch", "yaw", "roll")):
        spectrum[axis], peaks[axis] = _spectrum(head[:, a], fps)
    spectrum["peak_hz"] = peaks
    return {
        "version": STYLE_VERSION,
        "mouth_gain": gain,
        "mouth_p95": p95,
        "blink_rate_per_min": round(n_blinks / minutes, 2),
        "blink_duration_s": round(blink_s, 3),
        "blinks": n_blinks,
        "head_sway_rms_deg": {
            ax: round(float(v), 3) for ax, v in zip(("pitch", "yaw", "roll"), rms, strict=True)
        },
        "head_drift_rms_deg": {
            ax: round(float(v), 3) for ax, v in zip(("pitch", "yaw", "roll"), drift, strict=True)
        },
        "head_sway_spectrum": spectrum,
        "speaking_fraction": round(float(speaking.mean()), 3),
        "speech_from": source,
        "seconds": round(float(times[-1] - times[0]), 2),
        "fps": round(fps, 3),
    }

"""``splatcast bench expression``: does the face follow what is said (emotion) and how (emphasis)?

Two measurements, each against a baseline with ``expressiveness`` 0 (the face
as it moved before issue 17), written to one JSON report:

**Emotion from text, seen in the pixels.** Sentences written with a clear
happy or sad sentiment (:data:`HAPPY`, :data:`SAD`; nothing tells the avatar
which is which but their words) are rendered to MP4 by the same code as
``splatcast say``. mediapipe's face mesh (its own environment, as avatar
creation uses it) finds 478 landmarks in every decoded frame; the **mouth-corner
elevation** of a frame is how far the two mouth corners (61, 291) sit above
the middle of the inner lips (13, 14), in units of the inter-ocular distance
(outer eye corners 33, 263), so it is positive for a smile and falls with a
frown, whatever the jaw does. A sentence's value is the median over its
frames from 0.4 s after the first word (the 400 ms emotion transition) to
the end of the clip. Reported: both distributions, the difference of the
medians, the **margin** (smallest happy minus largest sad: > 0 means every
happy sentence smiles more than every sad one) and the AUC.

**Emphasis from the voice.** Held-out sentences (``bench lipsync``'s) are
spoken by Piper (alignment path) and by espeak-ng (Debian's; a different
voice, through the a2v network, no alignments), and played through
:class:`realtime.media.stream.AvatarStream`. The motion tracks are the
rig's brow raise (``browInnerUp`` + the outer brows) and head pitch, each
minus its 0.5 s moving average (the slow emotion overlays and drift removed).
The **pitch-accent track** is computed offline from the audio alone, with a
different pitch tracker than the one that drives the face: WORLD's Harvest
f0 (``pyworld``, 5 ms steps, the median of each video frame's voiced steps,
octave jumps from the utterance's median folded back), in semitones above
the lowest voiced pitch of the surrounding 0.5 s (non-causal), times the frame's loudness against the utterance's
voiced level, smoothed over 3 frames. Reported: Pearson r between each
motion track and the accent track at the best lag from -4 to +8 frames
(+: the motion comes later; a nod kicked at a syllable's onset peaks
~125 ms later), pooled over the sentences, for expressiveness 0.6 and 0, and for
beats of the same number placed at random frames (what chance gives).

The per-frame cost of the expressive layer (AvatarStream.next_frame_job:
motion + prosody) is timed with it on and off, interleaved.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import git_info, machine_info
from benchmarks.report import ReportError, finish, new_report, write_outputs
from benchmarks.target import BenchError, avatar_path
from realtime.settings import Settings

logger = logging.getLogger(__name__)

HAPPY = (
    "I am so happy to see you again, this is wonderful news!",
    "Congratulations, you did a fantastic job and I am really proud of you.",
    "What a beautiful sunny morning, I love walking by the sea.",
    "Thank you so much for the lovely gift, it made my day.",
    "We won the game, everyone is cheering and laughing together.",
    "Your garden looks amazing, the flowers are gorgeous this year.",
    "I am delighted that you can join us for dinner tonight.",
    "That was the best holiday we ever had, so much fun!",
)
SAD = (
    "I am so sorry, your flight was cancelled and your bags are lost.",
    "Unfortunately the old dog died last night, and we all miss him terribly.",
    "It is a sad day, the factory closed and many people lost their jobs.",
    "I failed the exam again, and I feel hopeless and tired.",
    "The storm destroyed their home, and they have nothing left.",
    "She was lonely and heartbroken after the painful divorce.",
    "I regret to tell you that the project failed and was cancelled.",
    "He cried at the funeral of his best friend.",
)
EXPRESSIVE = 0.6
SETTLE_S = 0.4  # the emotion transition (400 ms) before a sentence's face is measured
MAX_LAG_FRAMES = 8
MIN_LAG_FRAMES = 4
DETREND_S = 0.5
TROUGH_S = 0.5
CORNERS = (61, 291)
INNER_LIP_MID = (13, 14)
EYE_OUTER = (33, 263)


# --- emotion: mouth corners from mediapipe landmarks ------------------------------------------------


def corner_elevation(landmarks: np.ndarray) -> float:
    """Mouth corners above the inner-lip middle, in inter-ocular distances (+: smile)."""
    lm = np.asarray(landmarks, np.float64)  # [478, 3] pixels
    iod = float(np.linalg.norm(lm[EYE_OUTER[0], :2] - lm[EYE_OUTER[1], :2]))
    mid_y = 0.5 * (lm[INNER_LIP_MID[0], 1] + lm[INNER_LIP_MID[1], 1])
    corners_y = 0.5 * (lm[CORNERS[0], 1] + lm[CORNERS[1], 1])
    return float((mid_y - corners_y) / max(iod, 1e-6))


def video_corner_elevation(path: Path, start_s: float) -> tuple[float, int]:
    """Median corner elevation over an MP4's frames from ``start_s`` on, and how many frames had a face."""
    import av

    from engines.create.tracking import FaceTracker

    values = []
    with av.open(str(path)) as container, FaceTracker(max_faces=1, mode="image") as tracker:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is None or frame.time < start_s:
                continue
            faces = tracker.process(frame.to_ndarray(format="rgb24"))
            if faces:
                values.append(corner_elevation(faces[0]))
    if not values:
        raise BenchError(f"mediapipe found no face in {path.name}")
    return float(np.median(values)), len(values)


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a random positive > a random negative), ties counted half."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def measure_emotion(
    settings: Settings, tmp: Path, count: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    from realtime.media.offline import LEAD_IN_S, render_mp4

    rows = []
    for label, texts in (("happy", HAPPY[:count]), ("sad", SAD[:count])):
        for i, text in enumerate(texts):
            row: dict[str, Any] = {"label": label, "text": text}
            for e in (EXPRESSIVE, 0.0):
                clip = tmp / f"{label}{i}_{e}.mp4"
                progress(f"{label} {i + 1}/{len(texts)} at expressiveness {e}")
                render_mp4(settings, clip, text=text, progress=False, expressiveness=e)
                value, faces = video_corner_elevation(clip, LEAD_IN_S + SETTLE_S)
                row[f"corner_elevation_e{e:g}"] = value
                row[f"faces_e{e:g}"] = faces
                clip.unlink()
            rows.append(row)
    out: dict[str, Any] = {"sentences": rows}
    for e in (EXPRESSIVE, 0.0):
        key = f"corner_elevation_e{e:g}"
        happy = [r[key] for r in rows if r["label"] == "happy"]
        sad = [r[key] for r in rows if r["label"] == "sad"]
        out[f"e{e:g}"] = {
            "happy": happy,
            "sad": sad,
            "median_difference": float(np.median(happy) - np.median(sad)),
            "margin": float(min(happy) - max(sad)),
            "auc": auc(happy, sad),
        }
    return out


# --- emphasis: rig motion against an offline pitch-accent track -------------------------------------


def accent_track(pcm: np.ndarray, sample_rate: int, fps: int, frames: int) -> np.ndarray:
    """The offline pitch-accent track [frames]: WORLD Harvest f0 over the whole utterance (non-causal)."""
    try:
        import pyworld
    except ImportError as exc:  # pragma: no cover - a bench extra
        raise BenchError("bench expression needs pyworld: pip install 'splatcast[bench]'") from exc
    x = np.asarray(pcm, np.float64)
    f0, t = pyworld.harvest(x, sample_rate, f0_floor=50.0, f0_ceil=400.0, frame_period=5.0)
    f0 = np.asarray(f0)
    t = np.asarray(t)
    voiced_st = 12.0 * np.log2(f0[f0 > 0] / 100.0)
    centre = float(np.median(voiced_st)) if voiced_st.size else 0.0
    st = np.full(frames, np.nan)
    for k in range(frames):  # frame k covers [k, k+1)/fps: the median of Harvest's 5 ms values inside it
        inside = f0[(t >= k / fps) & (t < (k + 1) / fps)]
        inside = inside[inside > 0]
        if inside.size * 2 >= max(1, round(200 / fps)):  # at least half of the frame voiced
            v = 12.0 * np.log2(float(np.median(inside)) / 100.0)
            st[k] = v - 12.0 * round((v - centre) / 12.0) if abs(v - centre) > 7.0 else v  # octave errors
    spf = sample_rate / fps
    level = np.array(
        [
            10.0 * np.log10(np.mean(x[int(k * spf) : int((k + 1) * spf)] ** 2) + 1e-10)
            if int(k * spf) < len(x)
            else -100.0
            for k in range(frames)
        ]
    )
    voiced = ~np.isnan(st)
    speech_level = float(np.median(level[voiced])) if voiced.any() else 0.0
    loud = np.clip((level - (speech_level - 9.0)) / 9.0, 0.0, 1.0)
    half = max(1, round(TROUGH_S * fps / 2))
    track = np.zeros(frames)
    for k in range(frames):
        if not voiced[k]:
            continue
        window = st[max(0, k - half) : k + half + 1]
        track[k] = max(0.0, st[k] - float(np.nanmin(window))) * loud[k]
    return np.convolve(track, np.array([0.25, 0.5, 0.25]), mode="same")


def detrend(x: np.ndarray, fps: int) -> np.ndarray:
    n = max(1, round(DETREND_S * fps))
    kernel = np.ones(n) / n
    pad = np.pad(np.asarray(x, np.float64), (n // 2, n - 1 - n // 2), mode="edge")
    return np.asarray(x, np.float64) - np.convolve(pad, kernel, mode="valid")


def lagged_r(reference: Sequence[np.ndarray], motion: Sequence[np.ndarray]) -> tuple[float, int]:
    """Pearson r of the pooled (motion L frames later, reference) pairs at the best L in -MIN_LAG..MAX_LAG."""
    best = (-2.0, 0)
    for lag in range(-MIN_LAG_FRAMES, MAX_LAG_FRAMES + 1):
        a, b = max(0, -lag), max(0, lag)  # reference from a, motion from b
        ref = np.concatenate([r[a : len(r) - b] for r in reference])
        mot = np.concatenate([m[b : len(m) - a] for m in motion])
        if ref.std() == 0 or mot.std() == 0:
            continue
        r = float(np.corrcoef(ref, mot)[0, 1])
        if r > best[0]:
            best = (r, lag)
    return best if best[0] > -2 else (float("nan"), 0)


def _channel_tracks(params: np.ndarray, channels: tuple[str, ...], fps: int) -> dict[str, np.ndarray]:
    idx = {c: i for i, c in enumerate(channels)}
    brow = params[:, idx["browInnerUp"]] + 0.5 * (
        params[:, idx["browOuterUpLeft"]] + params[:, idx["browOuterUpRight"]]
    )
    return {"brow": detrend(brow, fps), "head": detrend(params[:, idx["headPitch"]], fps)}


def play(
    pcm: np.ndarray,
    sample_rate: int,
    alignments: Sequence[Any] | None,
    expressiveness: float,
    lip_model: Any,
    channels: tuple[str, ...],
    fps: int,
) -> tuple[np.ndarray, float]:
    """Rig parameters [frames, C] of one utterance through AvatarStream, and seconds per frame spent."""
    from realtime.media.stream import AvatarStream

    stream = AvatarStream(channels, fps=fps, lip_model=lip_model, seed=5, expressiveness=expressiveness)
    if alignments is not None:
        stream.push_tts_audio(pcm, sample_rate, alignments)
    else:
        step = max(1, sample_rate // 10)
        for i in range(0, len(pcm), step):
            stream.push_tts_audio(pcm[i : i + step], sample_rate)
    stream.end_utterance()
    jobs = []
    t0 = time.perf_counter()
    while stream.pending_utterances:
        jobs.append(stream.next_frame_job())
    spent = time.perf_counter() - t0
    speaking = [j for j in jobs if j.speaking]
    return np.stack([j.params for j in speaking]), spent / max(1, len(jobs))


def espeak(text: str, path: Path) -> tuple[np.ndarray, int]:
    try:
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"espeak-ng failed ({exc}); apt-get install espeak-ng") from exc
    from realtime.media.offline import read_audio

    return read_audio(path)


def measure_emphasis(
    settings: Settings, tmp: Path, count: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    from benchmarks.lipsync import held_out_sentences
    from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS
    from engines.tts import PiperTTS
    from realtime.media.engine import load_lip_model

    channels = (*ARKIT_BLENDSHAPES, *POSE_CHANNELS)
    fps = settings.fps
    tts = PiperTTS.load()
    lip_model = load_lip_model(settings)
    if lip_model is None:
        raise BenchError("the espeak-ng voice needs the a2v network (engines/data/a2v.onnx)")
    rng = np.random.default_rng(2026)
    out: dict[str, Any] = {}
    costs: dict[str, list[float]] = {"on": [], "off": []}
    for voice in ("piper", "espeak-ng"):
        refs: list[np.ndarray] = []
        tracks: dict[str, dict[str, list[np.ndarray]]] = {"on": {}, "off": {}, "random": {}}
        for i, text in enumerate(held_out_sentences(count)):
            progress(f"{voice} {i + 1}/{count}")
            if voice == "piper":
                chunks = list(tts.synthesize(text))
                pcm = np.concatenate([c.pcm for c in chunks])
                rate = chunks[0].sample_rate
                align: list[Any] | None = [a for c in chunks for a in c.alignments]
            else:
                pcm, rate = espeak(text, tmp / f"espeak{i}.wav")
                align = None
            on, cost_on = play(pcm, rate, align, EXPRESSIVE, lip_model, channels, fps)
            off, cost_off = play(pcm, rate, align, 0.0, lip_model, channels, fps)
            costs["on"].append(cost_on)
            costs["off"].append(cost_off)
            n = min(len(on), len(off))
            refs.append(accent_track(pcm, rate, fps, n))
            for name, params in (("on", on[:n]), ("off", off[:n])):
                for track, motion in _channel_tracks(params, channels, fps).items():
                    tracks[name].setdefault(track, []).append(motion)
            # chance: the same beats at random frames (the 'on' motion, circularly shifted)
            shift = int(rng.integers(fps, max(fps + 1, n - fps))) if n > 2 * fps else 0
            for track, motion in _channel_tracks(on[:n], channels, fps).items():
                tracks["random"].setdefault(track, []).append(np.roll(motion, shift))
        result: dict[str, Any] = {}
        for name, per_track in tracks.items():
            for track, values in per_track.items():
                r, lag = lagged_r(refs, values)
                result[f"{track}_r_{name}"] = r
                result[f"{track}_lag_frames_{name}"] = lag
        out[voice] = result
    out["frame_cost_ms"] = {k: 1000.0 * float(np.median(v)) for k, v in costs.items()}
    return out


def bench_expression_command(settings: Settings, args: argparse.Namespace) -> int:
    count = 8 if args.sessions is None else args.sessions  # --sessions doubles as the sentence count here
    if count < 1:
        print("splatcast bench expression: --sessions (sentences) must be >= 1", file=sys.stderr)
        return 2
    command = "splatcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = {**machine_info(), "git": git_info()}

    def progress(what: str) -> None:
        print(f"bench expression: {what}", file=sys.stderr, flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="splatcast-expression-") as tmp:
            path, synthetic = avatar_path(settings, Path(tmp))
            settings = settings.replace(avatar=path)
            emphasis = measure_emphasis(settings, Path(tmp), count, progress)
            emotion = measure_emotion(settings, Path(tmp), min(count, len(HAPPY)), progress)
        on, off = emotion[f"e{EXPRESSIVE:g}"], emotion["e0"]
        summary = {
            "corner_median_difference": on["median_difference"],
            "corner_margin": on["margin"],
            "corner_auc": on["auc"],
            "corner_median_difference_off": off["median_difference"],
            "piper_brow_r": emphasis["piper"]["brow_r_on"],
            "piper_head_r": emphasis["piper"]["head_r_on"],
            "piper_brow_r_off": emphasis["piper"]["brow_r_off"],
            "piper_head_r_off": emphasis["piper"]["head_r_off"],
            "piper_brow_r_random": emphasis["piper"]["brow_r_random"],
            "espeak_brow_r": emphasis["espeak-ng"]["brow_r_on"],
            "espeak_head_r": emphasis["espeak-ng"]["head_r_on"],
            "espeak_brow_r_off": emphasis["espeak-ng"]["brow_r_off"],
            "espeak_brow_r_random": emphasis["espeak-ng"]["brow_r_random"],
            "frame_cost_on_ms": emphasis["frame_cost_ms"]["on"],
            "frame_cost_off_ms": emphasis["frame_cost_ms"]["off"],
        }
        config = {
            "avatar": path.name,
            "synthetic_avatar": synthetic,
            "size": settings.size,
            "fps": settings.fps,
            "expressiveness": EXPRESSIVE,
            "sentences_per_set": count,
        }
        report = new_report("expression", command, config, machine)
        report.update({"summary": summary, "emotion": emotion, "emphasis": emphasis})
        report["targets"] = {
            "corner_margin": {"op": ">=", "value": 0.0},
            "piper_brow_r": {"op": ">=", "value": 0.3},
            "espeak_brow_r": {"op": ">=", "value": 0.2},
        }
        md, regressions = write_outputs(report, args.json_out, args.report, args.compare)
    except (BenchError, ReportError) as exc:
        print(f"splatcast bench expression: {exc}", file=sys.stderr)
        return 1
    print(md)
    return finish(regressions, args.json_out)

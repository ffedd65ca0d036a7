"""``splatcast bench lipsync``: does the rendered mouth follow the speech, and with what lag?

Held-out sentences (hand-written ones and template sentences from a seed the
a2v corpus does not use) are rendered to MP4 by the same code as ``splatcast
say`` (:func:`realtime.media.offline.render_mp4`). The mouth opening is then measured
from the decoded H.264 frames — the mean luminance of the avatar's mouth box,
oriented and baselined on the idle lead-in frames as in
:mod:`benchmarks.analysis` — and correlated against the alignment-derived
``jawOpen`` that drove each frame (Piper's phoneme alignments through
:class:`engines.a2v.visemes.AlignmentTrack`, returned by ``render_mp4``). The
report gives per sentence the Pearson correlation at lag 0, the best lag
within ±5 frames (positive = pixels after the alignment) and the
correlation there; and, with the A/V-offset method of ``bench latency``
applied to the file itself (decoded audio envelope vs pixel mouth, no
network), the offset the lip model and renderer build in — the reference
for the offset measured at a WebRTC receiver.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np

from benchmarks import analysis
from benchmarks.machine import git_info, machine_info
from benchmarks.report import ReportError, finish, new_report, write_outputs
from benchmarks.target import BenchError, avatar_path, mouth_box_pixels
from realtime.settings import Settings

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 2026  # the a2v corpus uses other seeds (`splatcast a2v data --seed`, default 0)
HAND_WRITTEN = (
    "Would you like to hear about the weather on the coast this weekend?",
    "My favourite breakfast is warm toast with butter and a big cup of coffee.",
    "Please open the window, it is very hot in this room.",
)
MAX_LAG_FRAMES = 5


def held_out_sentences(count: int) -> list[str]:
    from engines.a2v.sentences import generate_sentences

    extra = generate_sentences(max(0, count - len(HAND_WRITTEN)), seed=HELD_OUT_SEED)
    return [*HAND_WRITTEN, *extra][:count]


def mouth_luma(path: Path, box: tuple[int, int, int, int]) -> np.ndarray:  # [frames] float64
    x0, y0, x1, y1 = box
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            gray = frame.to_ndarray(format="gray")
            out.append(float(gray[y0:y1, x0:x1].mean()))
    return np.asarray(out)


def audio_rms(path: Path) -> tuple[np.ndarray, np.ndarray]:  # ([packets] s, [packets] RMS)
    """RMS of each decoded audio frame of an MP4 and its presentation time (AAC priming accounted)."""
    times, rms = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            if frame.pts is None or frame.time_base is None:
                continue
            samples = frame.to_ndarray().astype(np.float64).reshape(-1)
            times.append(float(frame.pts * frame.time_base) + 0.5 * frame.samples / frame.sample_rate)
            rms.append(float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0)
    return np.asarray(times), np.asarray(rms)


def measure_sentence(
    settings: Settings, text: str, box: tuple[int, int, int, int], out: Path
) -> dict[str, Any]:
    from realtime.media.offline import LEAD_IN_S, render_mp4

    result = render_mp4(settings, out, text=text, progress=False)
    luma = mouth_luma(out, box)
    ref = np.asarray(result.mouth_open, np.float64)  # [frames] alignment jawOpen
    n = min(luma.size, ref.size)
    luma, ref = luma[:n], ref[:n]
    lead = max(3, round(LEAD_IN_S * settings.fps) - 1)
    baseline = analysis.mouth_baseline(luma[:lead], luma[ref > 0.1])
    pixel_open = baseline.signal(luma)
    lag, best, zero = analysis.lagged_correlation(ref, pixel_open, MAX_LAG_FRAMES)
    # the same A/V-offset method as `bench latency`, on the file (no network): the lip model's own offset
    intrinsic = None
    at, ar = audio_rms(out)
    vt = np.arange(n) / settings.fps
    try:
        env = analysis.envelope_on_frames(vt, at, ar)
        mids = vt + 0.5 / settings.fps
        intrinsic = analysis.av_offset(vt, pixel_open, mids, env).lag_ms
    except analysis.AnalysisError as exc:
        logger.warning("bench lipsync: no offline A/V offset for %r: %s", text[:30], exc)
    return {
        "text": text,
        "frames": n,
        "corr": zero,
        "best_lag_frames": lag,
        "lag_ms": lag * 1000.0 / settings.fps,
        "corr_at_best_lag": best,
        "file_av_offset_ms": intrinsic,  # + = audio after the mouth, measured on the MP4 like bench latency
        "pixel_open": pixel_open,
        "alignment_open": ref,
        "render_s": result.render_s,
    }


def bench_lipsync_command(settings: Settings, args: argparse.Namespace) -> int:
    count = 5 if args.sessions is None else args.sessions  # --sessions doubles as the sentence count here
    if count < 1:
        print("splatcast bench lipsync: --sessions (sentences) must be >= 1", file=sys.stderr)
        return 2
    command = "splatcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = {**machine_info(), "git": git_info()}  # before the run: load average and the code measured
    try:
        with tempfile.TemporaryDirectory(prefix="splatcast-lipsync-") as tmp:
            path, synthetic = avatar_path(settings, Path(tmp))
            settings = settings.replace(avatar=path)
            box = mouth_box_pixels(path, settings.size)
            if box is None:
                raise BenchError(f"{path.name} has no mouth_box in its metadata")
            from tqdm import tqdm

            sentences = []
            for i, text in enumerate(tqdm(held_out_sentences(count), desc="bench lipsync", file=sys.stderr)):
                sentences.append(measure_sentence(settings, text, box, Path(tmp) / f"s{i}.mp4"))
        corr = [s["corr"] for s in sentences if np.isfinite(s["corr"])]
        lags = [s["lag_ms"] for s in sentences]
        offs = [s["file_av_offset_ms"] for s in sentences if s["file_av_offset_ms"] is not None]
        summary = {
            "sentences": float(len(sentences)),
            "lipsync_corr": float(np.median(corr)) if corr else None,
            "lipsync_corr_min": float(np.min(corr)) if corr else None,
            "lipsync_lag_ms": float(np.median(lags)),
            "lipsync_lag_abs_ms": float(np.median(np.abs(lags))),
            "file_av_offset_ms": float(np.median(offs)) if offs else None,
        }
        config = {
            "avatar": path.name,
            "synthetic_avatar": synthetic,
            "size": settings.size,
            "fps": settings.fps,
            "mouth_box": list(box),
            "held_out_seed": HELD_OUT_SEED,
        }
        report = new_report("lipsync", command, config, machine)
        report.update({"summary": summary, "sentences": sentences})
        report["targets"] = {
            "lipsync_corr": {"op": ">=", "value": 0.5},
            "lipsync_lag_ms": {"op": "abs<=", "value": 40.0},
        }
        md, regressions = write_outputs(report, args.json_out, args.report, args.compare)
    except (BenchError, ReportError, analysis.AnalysisError) as exc:
        print(f"splatcast bench lipsync: {exc}", file=sys.stderr)
        return 1
    print(md)
    return finish(regressions, args.json_out)

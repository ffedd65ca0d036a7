"""Held-out evaluation of an a2v runtime against the alignment path, with an energy-envelope baseline.

For every held-out utterance (sentences never trained on; variants ``clean``,
``aug`` and the unseen ``heldout`` telephone family) the audio goes through
the real runtime (``A2V.infer``) and is compared frame by frame with the
alignment path of its Piper alignments:

* ``viseme_accuracy``: argmax viseme equal to the alignment path's dominant viseme;
* ``jaw_corr``: Pearson correlation of jawOpen, pooled over all frames
  (``jaw_corr_per_utt``: mean of per-utterance correlations);
* ``closed_in_silence``: fraction of fully silent frames with jawOpen < 0.1;
* the same jaw figures for an energy baseline (mouth opens with loudness);
* ``latency_ms``: time of ``push`` for 40 ms chunks on one stream (median, p95).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.a2v.data import TestUtterance, load_test_utterances, timeline_frames
from engines.a2v.features import SAMPLE_RATE
from engines.a2v.runtime import A2V
from engines.a2v.visemes import JAW_OPEN_INDEX, N_VISEMES, SPEECH_INDEX

logger = logging.getLogger(__name__)

CLOSED = 0.1


def energy_baseline(pcm16k: np.ndarray, fps: int, frames: int) -> np.ndarray:
    """jawOpen from loudness: frame RMS in dB mapped from (p95 − 35 dB … p95) to 0…0.7. ``[frames]``."""
    per = SAMPLE_RATE / fps
    out = np.zeros(frames)
    db = np.full(frames, -120.0)
    for k in range(frames):
        seg = pcm16k[int(k * per) : int((k + 1) * per)]
        if len(seg):
            db[k] = 20 * np.log10(np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-9)
    top = np.percentile(db, 95)
    out = np.clip((db - (top - 35.0)) / 35.0, 0.0, 1.0) * 0.7
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _metrics(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    pred = np.concatenate([r["pred"] for r in rows])
    ref = np.concatenate([r["ref"] for r in rows])
    base = np.concatenate([r["base"] for r in rows])
    silent = ref[:, SPEECH_INDEX] == 0.0
    vis_ref = ref[:, :N_VISEMES].argmax(1)
    majority = np.bincount(vis_ref, minlength=N_VISEMES).argmax()
    per_utt = [_corr(r["pred"][:, JAW_OPEN_INDEX], r["ref"][:, JAW_OPEN_INDEX]) for r in rows]
    per_utt_base = [_corr(r["base"], r["ref"][:, JAW_OPEN_INDEX]) for r in rows]
    jaw_corr = _corr(pred[:, JAW_OPEN_INDEX], ref[:, JAW_OPEN_INDEX])
    base_corr = _corr(base, ref[:, JAW_OPEN_INDEX])
    return {
        "utterances": len(rows),
        "frames": len(pred),
        "viseme_accuracy": float(np.mean(pred[:, :N_VISEMES].argmax(1) == vis_ref)),
        "viseme_accuracy_majority_class": float(np.mean(vis_ref == majority)),
        "jaw_corr": jaw_corr,
        "jaw_corr_per_utt": float(np.nanmean(per_utt)),
        "jaw_mae": float(np.mean(np.abs(pred[:, JAW_OPEN_INDEX] - ref[:, JAW_OPEN_INDEX]))),
        "closed_in_silence": float(np.mean(pred[silent, JAW_OPEN_INDEX] < CLOSED))
        if silent.any()
        else float("nan"),
        "silent_frames": int(silent.sum()),
        "speech_accuracy": float(np.mean((pred[:, SPEECH_INDEX] > 0.5) == (ref[:, SPEECH_INDEX] > 0.5))),
        "baseline_energy": {
            "jaw_corr": base_corr,
            "jaw_corr_per_utt": float(np.nanmean(per_utt_base)),
            "closed_in_silence": float(np.mean(base[silent] < CLOSED)) if silent.any() else float("nan"),
        },
        "jaw_corr_gain_over_baseline": jaw_corr - base_corr,
    }


def chunk_latency(a2v: A2V, pcm16k: np.ndarray, chunk_ms: int = 40, repeats: int = 3) -> dict[str, float]:
    """Per-chunk ``push`` latency (ms) of one stream fed ``chunk_ms`` chunks at 16 kHz."""
    n = SAMPLE_RATE * chunk_ms // 1000
    times = []
    for _ in range(repeats):
        s = a2v.stream(SAMPLE_RATE)
        for i in range(0, len(pcm16k) - n + 1, n):
            t0 = time.perf_counter()
            s.push(pcm16k[i : i + n])
            times.append((time.perf_counter() - t0) * 1e3)
    arr = np.array(times[5:] if len(times) > 10 else times)
    return {
        "chunk_ms": chunk_ms,
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "n": len(arr),
    }


def evaluate(a2v: A2V, utterances: Sequence[TestUtterance], progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    rows: dict[str, list[dict[str, np.ndarray]]] = {}
    for u in tqdm(utterances, desc="a2v eval", unit="utt", disable=not progress):
        pred = a2v.infer(u.audio, SAMPLE_RATE)
        ref = timeline_frames(u.timeline, a2v.fps)
        t = min(len(pred), len(ref))
        base = energy_baseline(u.audio, a2v.fps, t)
        rows.setdefault(u.variant, []).append({"pred": pred[:t], "ref": ref[:t], "base": base})
    result: dict[str, Any] = {"fps": a2v.fps, "runtime": a2v.runtime, "lookahead_ms": a2v.lookahead_ms}
    result["all"] = _metrics([r for v in rows.values() for r in v])
    result["seen_families"] = _metrics(rows.get("clean", []) + rows.get("aug", []))
    for variant, vrows in sorted(rows.items()):
        result[variant] = _metrics(vrows)
    longest = max(utterances, key=lambda u: len(u.audio))
    result["latency_ms"] = chunk_latency(a2v, longest.audio)
    return result


def evaluate_corpus(a2v: A2V, data: Path, progress: bool = True, limit: int | None = None) -> dict[str, Any]:
    """Evaluate on the held-out split of the corpus at ``data`` (see ``splatcast a2v eval``)."""
    utts = load_test_utterances(data)
    if limit is not None:
        utts = utts[:limit]
    return evaluate(a2v, utts, progress=progress)

"""CLI handlers for ``splatcast a2v …`` and ``splatcast export onnx|tensorrt`` (thin: logic lives in engines/ and export/)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from realtime.settings import Settings

logger = logging.getLogger(__name__)


def data_command(settings: Settings, args: argparse.Namespace) -> int:
    """Synthesise the a2v corpus (Piper + alignments + augmentation) into ``--out``."""
    from engines.a2v.data import CorpusConfig, build_corpus

    summary = build_corpus(args.out, CorpusConfig(sentences=args.sentences, seed=args.seed))
    print(json.dumps({k: summary[k] for k in ("train", "test", "build_seconds")}, indent=2))
    return 0


def train_command(settings: Settings, args: argparse.Namespace) -> int:
    """Train on CPU within ``--minutes``; writes a2v.pt, a2v.onnx and a2v.card.json to ``--out``."""
    from engines.a2v.train import TrainConfig
    from export.a2v_release import install, release

    card = release(args.data, args.out, TrainConfig(minutes=args.minutes, seed=args.seed))
    if getattr(args, "install", False):
        install(args.out)
    print(json.dumps(_summary(card["eval"]), indent=2))
    return 0


def _summary(result: dict) -> dict:
    keys = (
        "viseme_accuracy",
        "jaw_corr",
        "jaw_corr_per_utt",
        "closed_in_silence",
        "jaw_corr_gain_over_baseline",
    )
    out: dict = {"runtime": result["runtime"], "fps": result["fps"], "lookahead_ms": result["lookahead_ms"]}
    for split in ("all", "seen_families", "clean", "aug", "heldout"):
        if split in result:
            m = result[split]
            out[split] = {k: round(m[k], 4) for k in keys} | {
                "baseline_jaw_corr": round(m["baseline_energy"]["jaw_corr"], 4),
                "baseline_closed_in_silence": round(m["baseline_energy"]["closed_in_silence"], 4),
            }
    out["latency_ms"] = result["latency_ms"]
    return out


def eval_command(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate on the held-out split (real runtime vs the alignment path, plus the energy baseline)."""
    from engines.a2v.evaluate import evaluate_corpus
    from engines.a2v.runtime import load_a2v

    a2v = load_a2v(settings.a2v_runtime, weights=args.weights, fps=settings.fps)
    result = evaluate_corpus(a2v, args.data, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    summary = _summary(result)
    print(
        f"a2v eval: runtime {summary['runtime']}, {summary['fps']} fps, lookahead {summary['lookahead_ms']:.0f} ms"
    )
    header = f"{'split':<14}{'viseme acc':>11}{'jaw r':>8}{'jaw r/utt':>10}{'closed sil':>11}{'base r':>8}{'base closed':>12}"
    print(header)
    for split, m in summary.items():
        if not isinstance(m, dict) or "jaw_corr" not in m:
            continue
        print(
            f"{split:<14}{m['viseme_accuracy']:>11.3f}{m['jaw_corr']:>8.3f}{m['jaw_corr_per_utt']:>10.3f}"
            f"{m['closed_in_silence']:>11.3f}{m['baseline_jaw_corr']:>8.3f}{m['baseline_closed_in_silence']:>12.3f}"
        )
    lat = summary["latency_ms"]
    print(
        f"per-chunk latency ({lat['chunk_ms']} ms chunks, one stream): median {lat['median']:.2f} ms, p95 {lat['p95']:.2f} ms"
    )
    return 0


def export_onnx_command(settings: Settings, args: argparse.Namespace) -> int:
    """Checkpoint (torch) → streaming ONNX graph."""
    from export.onnx import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.output)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


def export_tensorrt_command(settings: Settings, args: argparse.Namespace) -> int:
    """ONNX → TensorRT engine (FP16, profile batch 1..--max-batch); needs a GPU and the tensorrt package."""
    from engines.assets import a2v_weights
    from export.tensorrt import TensorRTExportError, build_engine

    onnx_path = args.onnx or a2v_weights()
    try:
        path = build_engine(onnx_path, args.output, max_batch=args.max_batch)
    except TensorRTExportError as exc:
        print(f"splatcast export tensorrt: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}; run with --a2v-runtime tensorrt (engine path: SPLATCAST_CACHE or pass engine=)")
    return 0

"""Replica benchmark: build a replica from a clip (time per stage, peak memory) and score it by
self-reenactment against the one-shot baseline on the held-out frames; JSON out.

    splatcast bench replica --clip CLIP --json OUT.json [--report DIR] [--no-eval] [--avatar-out A]
    python -m benchmarks.replica ...  (the same)

Fields: ``clip`` (name, duration, size, fps), ``build_s`` (wall), ``stages_s`` (per stage),
``peak_rss_mb`` (this process: decode, fits, renders) and ``peak_rss_children_mb`` (the mediapipe
process), ``gaussians``, ``machine`` (cores, load average before/after), and with eval the
:class:`engines.create.reenact_eval.EvalReport` summary and the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def run(clip: Path, evaluate_too: bool, report_dir: Path | None, avatar_out: Path | None) -> dict[str, Any]:
    from engines.create.replica import build_replica
    from engines.splat.avatar import save_avatar

    out: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": list(os.getloadavg()),
        }
    }
    t0 = time.monotonic()
    res = build_replica(clip)
    out["build_s"] = round(time.monotonic() - t0, 2)
    out["stages_s"] = res.report["seconds"]
    out["peak_rss_mb"] = round(_rss_mb(resource.RUSAGE_SELF), 1)
    out["peak_rss_children_mb"] = round(_rss_mb(resource.RUSAGE_CHILDREN), 1)
    out["gaussians"] = res.avatar.count
    out["clip"] = res.report["clip"]
    out["tracking"] = res.report["tracking"]
    out["replica"] = {k: res.report[k] for k in ("rest_frame", "landmark_residual_px", "appearance_rms")}
    if avatar_out:
        save_avatar(res.avatar, avatar_out)
    if evaluate_too:
        from engines.create.reenact_eval import write_report
        from engines.create.self_reenact import evaluate

        t1 = time.monotonic()
        report, runs = evaluate(clip, res.avatar, tracking=res.tracking)
        out["eval_s"] = round(time.monotonic() - t1, 2)
        data = report.to_json()
        out["eval"] = {k: data[k] for k in ("summary", "targets", "info", "heldout_frames")}
        if report_dir:
            write_report(
                report,
                report_dir,
                list(runs["replica"].real),
                {name: list(run.renders) for name, run in runs.items()},
            )
    out["machine"]["load_after"] = list(os.getloadavg())
    return out


def bench_replica_command(settings: Any, args: argparse.Namespace) -> int:
    """``splatcast bench replica --clip CLIP --json OUT [--report DIR] [--avatar-out A] [--no-eval]``."""
    return _run_and_write(args.clip, args.json, args.report, args.avatar_out, not args.no_eval)


def _run_and_write(
    clip: Path, json_path: Path, report: Path | None, avatar_out: Path | None, ev: bool
) -> int:
    from engines.create.face_env import FaceEnvError
    from engines.create.video_io import VideoAvatarError

    try:
        result = run(clip, ev, report, avatar_out)
    except (VideoAvatarError, FaceEnvError) as exc:
        print(f"splatcast bench replica: {exc}", file=sys.stderr)
        return 1
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("build_s", "stages_s", "peak_rss_mb", "peak_rss_children_mb")}))
    if "eval" in result:
        print(json.dumps(result["eval"]["targets"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.replica", description=__doc__.split("\n")[0])
    p.add_argument("--clip", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--report", type=Path, default=None, help="also write the eval report (md, png, mp4) here")
    p.add_argument("--avatar-out", type=Path, default=None, help="save the replica here")
    p.add_argument("--no-eval", action="store_true", help="build only")
    args = p.parse_args(argv)
    return _run_and_write(args.clip, args.json, args.report, args.avatar_out, not args.no_eval)


if __name__ == "__main__":
    sys.exit(main())

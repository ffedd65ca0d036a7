"""``splatcast avatar create --video`` and ``splatcast avatar eval``: thin CLI handlers.

``avatar create`` (:mod:`realtime.cli.avatar`) hands ``--video`` to :func:`create_video_command`.

The work lives in :mod:`engines.create.replica` (the replica builder) and
:mod:`engines.create.self_reenact` / :mod:`engines.create.reenact_eval`
(self-reenactment on held-out frames and its report). Here: arguments,
one progress bar per stage, clear errors and exit codes (1: the input cannot
be used, with the reason; 2: bad arguments).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from realtime.settings import Settings


class StageBars:
    """One tqdm bar per stage of a ``progress(stage, done, total)`` callback, on stderr."""

    def __init__(self, prefix: str = "") -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._prefix = prefix
        self._stage: str | None = None
        self._bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = self._tqdm(
                total=max(int(total), 1),
                desc=f"{self._prefix}{stage}",
                unit="step",
                file=sys.stderr,
                leave=True,
            )
        bar = self._bar
        if bar is None:
            return
        if total and total != bar.total:
            bar.total = int(total)
            bar.refresh()
        step = min(int(done), int(bar.total)) - bar.n
        if step:
            bar.update(step)  # tqdm redraws at most every mininterval (0.1 s)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fail(command: str, exc: BaseException, bars: StageBars | None = None) -> int:
    if bars is not None:
        bars.close()
    print(f"splatcast avatar {command}: {exc}", file=sys.stderr)
    return 1


def create_video_command(settings: Settings, args: argparse.Namespace) -> int:
    """``avatar create --video CLIP -o OUT``: build a personal replica and save it."""
    from engines.create.face_env import FaceEnvError
    from engines.create.replica import ReplicaOptions, build_replica
    from engines.create.video_io import VideoAvatarError
    from engines.splat.avatar import save_avatar

    opts = ReplicaOptions()
    if getattr(args, "appearance_frames", None):
        opts.appearance_frames = int(args.appearance_frames)
    bars = StageBars()
    start = time.monotonic()
    try:
        res = build_replica(args.video, opts, progress=bars)
    except (VideoAvatarError, FaceEnvError) as exc:
        return _fail("create", exc, bars)
    bars.close()
    for warning in res.tracking.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    path = save_avatar(res.avatar, args.output)
    if getattr(args, "tracking", None):
        res.tracking.save(args.tracking)
    rep = res.report
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in rep["seconds"].items())
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {res.avatar.count} Gaussians) from "
        f"{res.tracking.describe()}; rest frame at {res.avatar.metadata['source_frame']['time_s']:.2f} s; "
        f"{rep['held_out']['frames']} frames from {rep['held_out']['from_s']:.1f} s held out for `avatar eval`"
    )
    print(f"built in {time.monotonic() - start:.0f} s ({stages}); peak memory {_peak_rss_mb():.0f} MB")
    return 0


def eval_command(settings: Settings, args: argparse.Namespace) -> int:
    """``avatar eval --video CLIP AVATAR [--baseline-photo-frame N] [--json OUT] [--report DIR]``."""
    from engines.create.face_env import FaceEnvError
    from engines.create.reenact_eval import write_report
    from engines.create.self_reenact import evaluate
    from engines.create.tracking import Tracking
    from engines.create.video_io import VideoAvatarError
    from engines.splat.avatar import AvatarFormatError, load_avatar

    try:
        avatar = load_avatar(args.avatar_path)
    except AvatarFormatError as exc:
        return _fail("eval", exc)
    tracking = None
    if getattr(args, "tracking", None) and Path(args.tracking).is_file():
        tracking = Tracking.load(args.tracking)
    bars = StageBars()
    try:
        report, runs = evaluate(
            args.video,
            avatar,
            baseline_frame=args.baseline_photo_frame,
            progress=bars,
            tracking=tracking,
            max_frames=getattr(args, "max_frames", None),
        )
    except (VideoAvatarError, FaceEnvError) as exc:
        return _fail("eval", exc, bars)
    bars.close()
    data = report.to_json()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1))
    if args.report:
        paths = write_report(
            report,
            args.report,
            list(runs["replica"].real),
            {name: list(run.renders) for name, run in runs.items()},
        )
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    print(report.markdown())
    return 0

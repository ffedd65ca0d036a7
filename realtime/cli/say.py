"""``splatcast say``: render TEXT (or ``--audio``) to an MP4 offline (:mod:`realtime.media.offline`)."""

from __future__ import annotations

import argparse
import sys

from realtime.media.offline import SayError, render_mp4
from realtime.settings import Settings


def say_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        result = render_mp4(settings, args.output, text=args.text, audio=args.audio, emotion=args.emotion)
    except (SayError, ValueError) as exc:
        print(f"splatcast say: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {result.path}: {result.frames} frames, {result.duration_s:.2f} s of video "
        f"in {result.render_s:.2f} s ({1 / max(result.realtime_factor, 1e-9):.1f}x real time)"
    )
    return 0

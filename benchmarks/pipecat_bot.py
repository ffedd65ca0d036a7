"""Benchmark ``splatcast bot`` through Pipecat: received FPS, RTP steps, A/V onset, audio→first image.

Starts the bot as a subprocess, calls it with an aiortc peer speaking
SmallWebRTC's signalling (as Pipecat's prebuilt client does), lets the bot's
greeting play, and writes JSON::

    python -m benchmarks.pipecat_bot --size 256 --seconds 10 --json build/bench-pipecat-bot.json

* ``fps``: video frames received per second over the window
* ``rtp_step``: median RTP timestamp step of the received video (3600 = 25 FPS on 90 kHz)
* ``audio_to_first_image_ms``: inside the service, the greeting's first TTS audio in →
  the image of its first frame out (the bot logs it per call)
* ``onset_av_ms``: at the receiver, first loud audio packet minus first frame whose mouth
  box changes (positive: the voice comes after the face); ``onset_av_corrected_ms``
  subtracts the ~33 ms an aiortc receiver adds to audio (FACTS.md)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import print_json
from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client, fps_between
from engines.splat.synthetic import write_synthetic_avatar

AIORTC_AUDIO_LAG_MS = 33.0
LOUD_RMS = 0.02


async def _call(base: str, box: tuple[int, int, int, int], seconds: float) -> dict[str, Any]:
    from aiortc.mediastreams import AudioStreamTrack

    client = Client(base, mouth_box=box, protocol="smallwebrtc", mic=AudioStreamTrack())
    try:
        await client.connect()
        await client.wait_video(5, timeout=120)
        await asyncio.sleep(seconds)
    finally:
        await client.close()
    rx = client.rx
    t = np.array(rx.video_t)
    window = (t[0] + 1.0, t[-1])
    mouth = np.array(rx.mouth)
    base_mouth = float(np.median(mouth[:10]))
    moved = np.nonzero(np.abs(mouth - base_mouth) > 3.0)[0]
    loud = [at for at, rms in zip(rx.audio_t, rx.audio_rms, strict=True) if rms > LOUD_RMS]
    onset = (loud[0] - float(t[moved[0]])) * 1000.0 if len(moved) and loud else None
    steps = np.diff(np.array(rx.video_pts, np.int64))
    assert client.connected_at is not None
    return {
        "frames": len(t),
        "fps": round(fps_between(rx.video_t, *window), 2),
        "rtp_step": float(np.median(steps)) if len(steps) else None,
        "first_frame_after_offer_s": round(float(t[0]) - client.connected_at, 3),
        "audio_rms_max": round(max(rx.audio_rms, default=0.0), 4),
        "mouth_luma_range": round(float(np.ptp(mouth)), 2) if len(mouth) else None,
        "onset_av_ms": None if onset is None else round(onset, 1),
        "onset_av_corrected_ms": None if onset is None else round(onset - AIORTC_AUDIO_LAG_MS, 1),
    }


def run(size: int, seconds: float, avatar: Path | None) -> dict[str, Any]:
    label = "synthetic" if avatar is None else str(avatar)
    with tempfile.TemporaryDirectory() as tmp:
        if avatar is None:
            avatar = Path(tmp) / "synthetic.safetensors"
            fx0, fy0, fx1, fy1 = write_synthetic_avatar(avatar)
        else:
            from engines.splat.avatar import load_avatar

            av = load_avatar(avatar)
            x0, y0, x1, y1 = av.metadata["mouth_box"]
            fx0, fy0 = x0 / av.camera.width, y0 / av.camera.height
            fx1, fy1 = x1 / av.camera.width, y1 / av.camera.height
        box = (int(fx0 * size), int(fy0 * size), math.ceil(fx1 * size), math.ceil(fy1 * size))
        server = ServerProcess("--avatar", str(avatar), "--size", str(size), command="bot")
        try:
            server.wait_ready()
            result = asyncio.run(_call(server.base, box, seconds))
            deadline = time.monotonic() + 15
            delays: list[float] = []
            counts: dict[str, int] = {}
            while time.monotonic() < deadline and not delays:
                for line in list(server.log):
                    m = re.search(r"over: (\d+) images \((\d+) late, (\d+) repeated\)", line)
                    if m:
                        counts = dict(zip(("images", "late", "repeated"), map(int, m.groups()), strict=True))
                    m = re.search(r"audio→first image \[([^\]]*)\]", line)
                    if m and m.group(1).strip():
                        delays = [float(x) for x in m.group(1).split(",")]
                time.sleep(0.2)
        finally:
            server.stop()
    result["audio_to_first_image_ms"] = [round(d * 1000.0, 1) for d in delays]
    result["service_frames"] = (
        counts  # images pushed; late: an older render went out; repeated: the same image
    )
    result.update({"size": size, "seconds": seconds, "avatar": label})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--avatar", type=Path, default=None, help="default: a synthetic test avatar")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.size, args.seconds, args.avatar)
    print_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fixed session script through AvatarStream, for 'expressiveness 0 is today's motion exactly'.

``tests/data/motion_before_expression.npz`` holds the rig parameters this
script produced with the code before issue 17 (commit 4ed1e06, the motion
layers and AvatarStream as they were). Rebuild it only for a deliberate change
of the default motion::

    PYTHONPATH=. python -m tests.expression_scenario tests/data/motion_before_expression.npz

The script uses no model: synthetic voiced audio with hand-made alignments
(stress marks included) on the alignment path, plain audio with no lip model,
two emotions, listening, an interrupt, and a second reply at another rate.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS
from engines.tts import Alignment

CHANNELS: tuple[str, ...] = (*ARKIT_BLENDSHAPES, *POSE_CHANNELS)
FRAMES = 400


def voiced(sr: int, seconds: float, f0: float = 110.0, seed: int = 0) -> np.ndarray:
    """A buzzy 'voice' with a slow pitch wobble and a syllable-rate envelope, float32 [N]."""
    t = np.arange(int(sr * seconds)) / sr
    f = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 1.3 * t + seed))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.15 * x * env).astype(np.float32)


def alignments_for(n: int) -> list[Alignment]:
    """Alignments covering exactly n samples: a loop of a short stressed phrase."""
    cycle = list("^həlˈoʊ wˈɜːld, ðɪs ɪz ɐ tˈɛst.$")
    per = max(1, n // (len(cycle) * 3))
    out: list[Alignment] = []
    used = 0
    i = 0
    while used + per < n:
        ch = cycle[i % len(cycle)]
        k = 0 if ch in "ˈˌ" else per
        out.append(Alignment(ch, k))
        used += k
        i += 1
    out.append(Alignment("$", n - used))
    return out


def run_scenario(stream_factory: Any, extras: bool = False) -> np.ndarray:
    """``stream_factory(channels, fps, seed) -> AvatarStream``; returns params [FRAMES, C] float32.

    ``extras``: also use what issue 17 added (sentence emotions on the chunks, the user's pauses,
    expressiveness set to 0 again mid-way), which must change nothing at expressiveness 0.
    """
    from engines.expression.emotions import EmotionCue

    stream = stream_factory(CHANNELS, 25, 11)
    cue = {"emotion": EmotionCue("surprised", 0.9, "text")} if extras else {}
    out = []
    for k in range(FRAMES):
        if extras and k in (95, 120, 275, 300):
            stream.user_pause()
        if extras and k == 200:
            stream.set_expressiveness(0.0)
        if k == 10:
            pcm = voiced(22_050, 2.4)
            stream.push_tts_audio(pcm, 22_050, alignments_for(len(pcm)), reply="a", **cue)
            stream.end_utterance()
        if k == 30:
            stream.set_emotion("happy", 0.8)
        if k == 90:
            stream.set_user_speaking(True)
        if k == 100:
            stream.interrupt()
        if k == 140:
            stream.set_user_speaking(False)
        if k == 150:
            stream.set_emotion("sad", 0.6)
        if k == 160:
            pcm = voiced(16_000, 2.0, f0=140.0, seed=2)
            for i in range(0, len(pcm), 1600):
                stream.push_tts_audio(pcm[i : i + 1600], 16_000, reply="b", **(cue if i == 8000 else {}))
            stream.end_utterance()
        if k == 260:
            stream.set_user_speaking(True)
        if k == 330:
            stream.set_user_speaking(False)
        out.append(stream.next_frame_job().params)
    return np.stack(out).astype(np.float32)


def main(path: str) -> None:
    from realtime.media.stream import AvatarStream

    params = run_scenario(lambda ch, fps, seed: AvatarStream(ch, fps=fps, seed=seed))
    np.savez_compressed(path, params=params, channels=np.array(CHANNELS))
    print(f"wrote {path}: {params.shape}")


if __name__ == "__main__":
    main(sys.argv[1])

"""Self-reenactment: drive avatars with a clip's held-out frames and score them (``splatcast avatar eval``).

:func:`evaluate` tracks the clip (the same tracking the replica builder
does), takes the held-out frames (the last 1/11, never used by the build),
and for the replica and a **one-shot baseline** (the photo pipeline on one
frame of the same clip, by default the replica's own rest frame: the best
single frame, so the comparison measures what the rest of the video adds):

1. drives the avatar with each frame's tracked head pose and expression
   coefficients (fitted on that avatar's own rig, :mod:`engines.create.reenact`);
2. crops the real frame where the avatar's camera looks (following the head);
3. finds the face landmarks on the real crop and on the render (one
   mediapipe process, image mode) and scores the pair with
   :func:`engines.create.reenact_eval.score_frame` (PSNR/SSIM on the face and
   a mouth crop, lip-landmark distance, head-pose error).

The head pose of a crop is the similarity fit of its rigid landmarks to the
clip's mean face (:func:`pose_of`), so the real frame and the render are
measured the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.create.photo import PhotoOptions, create_from_image
from engines.create.reenact import DriveError, crop_frames, drive
from engines.create.reenact_eval import EvalReport, FrameScores, score_frame
from engines.create.tracking import (
    RIGID,
    Tracking,
    landmarks_of_images,
    matrix_to_euler,
    track_video,
    umeyama,
)
from engines.create.video_io import iter_frames
from engines.splat.avatar import Avatar

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
RENDER_BATCH = 8


@dataclass
class Reenactment:
    """One avatar driven through the held-out frames."""

    name: str
    real: np.ndarray  # [K, S, S, 3] uint8, real frames cropped where this avatar's camera looks
    renders: np.ndarray  # [K, S, S, 3] uint8
    scores: list[FrameScores]


def pose_of(lm: np.ndarray | None, mean_shape: np.ndarray) -> np.ndarray | None:
    """(pitch, yaw, roll) radians of landmarks [478, 3] against the clip's mean face (None without a face)."""
    if lm is None or not np.all(np.isfinite(lm[list(RIGID)])):
        return None
    _, rot, _ = umeyama(mean_shape[list(RIGID)].astype(np.float64), lm[list(RIGID)].astype(np.float64))
    return np.asarray(matrix_to_euler(rot))


def one_shot_baseline(clip: str | Path, tracking: Tracking, position: int, size: int = 512) -> Avatar:
    """The photo pipeline on the tracked frame at ``position`` (its tracked landmarks), with its source
    frame recorded so that it can be driven by the same clip."""
    clip = Path(clip)
    number = int(tracking.frame_index[position])
    frame = next(iter_frames(clip, indices={number})).rgb
    avatar = create_from_image(
        frame,
        PhotoOptions(size=size),
        provenance={
            "source": f"{clip.name}, frame {number} ({tracking.times[position]:.2f} s)",
            "licence": "as the clip",
        },
        landmarks=tracking.landmarks[position],
    )
    avatar.metadata["source_frame"] = {
        "frame_index": number,
        "time_s": round(float(tracking.times[position]), 3),
        "position": position,
    }
    return avatar


def reenact(
    name: str,
    avatar: Avatar,
    clip: str | Path,
    tracking: Tracking,
    positions: np.ndarray,
    progress: Progress | None = None,
) -> Reenactment:
    """Drive ``avatar`` through ``positions`` of the tracking, render, find landmarks and score."""
    from engines.splat.render import Renderer

    say = progress or (lambda stage, done, total: None)
    d = drive(avatar, tracking, positions, progress=lambda i, n: say(f"{name}: fit", i, n))
    size = avatar.camera.width
    real = crop_frames(clip, tracking, positions, d.boxes, size)
    renderer = Renderer(avatar)
    renders = np.zeros_like(real)
    for i in range(0, len(positions), RENDER_BATCH):
        renders[i : i + RENDER_BATCH] = renderer.render(d.params[i : i + RENDER_BATCH], size=(size, size))
        say(f"{name}: render", min(i + RENDER_BATCH, len(positions)), len(positions))
    say(f"{name}: landmarks", 0, 1)
    found = landmarks_of_images(list(real) + list(renders))
    say(f"{name}: landmarks", 1, 1)
    k = len(positions)
    scores = []
    for i in range(k):
        real_lm, render_lm = found[i], found[k + i]
        scores.append(
            score_frame(
                int(tracking.frame_index[positions[i]]),
                real[i],
                renders[i],
                real_lm,
                render_lm,
                pose_of(real_lm, tracking.mean_shape),
                pose_of(render_lm, tracking.mean_shape),
            )
        )
    return Reenactment(name, real, renders, scores)


def evaluate(
    clip: str | Path,
    avatar: Avatar,
    baseline_frame: int | None = None,  # frame number in the clip; None: the replica's source frame
    progress: Progress | None = None,
    tracking: Tracking | None = None,
    max_frames: int | None = None,
) -> tuple[EvalReport, dict[str, Reenactment]]:
    """Self-reenactment of ``avatar`` and a one-shot baseline on the held-out frames of ``clip``."""
    say = progress or (lambda stage, done, total: None)
    clip = Path(clip)
    t0 = time.monotonic()
    tr = tracking or track_video(clip, progress=say)
    _, held = tr.split()
    held = held[tr.usable[held]]  # a face to compare with: found, in frame, not covered, sharp
    if max_frames and len(held) > max_frames:
        held = held[np.linspace(0, len(held) - 1, max_frames).round().astype(int)]
    if held.size == 0:
        raise DriveError(f"{clip}: no held-out frame (the last 1/11 of the clip) shows a usable face")
    if baseline_frame is None:
        src = (avatar.metadata.get("source_frame") or {}).get("frame_index")
        usable = np.flatnonzero(tr.usable)
        baseline_frame = int(src) if src is not None else int(tr.frame_index[usable[0]])
    hit = np.flatnonzero(tr.frame_index == baseline_frame)
    if hit.size == 0:
        raise DriveError(
            f"{clip}: frame {baseline_frame} was not tracked (frames are tracked at ≤ 30 fps: "
            f"pick one of {int(tr.frame_index[0])}, {int(tr.frame_index[1])}, …)"
        )
    say("one-shot baseline", 0, 1)
    baseline = one_shot_baseline(clip, tr, int(hit[0]), avatar.camera.width)
    say("one-shot baseline", 1, 1)
    runs = {
        "replica": reenact("replica", avatar, clip, tr, held, say),
        "one-shot": reenact("one-shot", baseline, clip, tr, held, say),
    }
    info: dict[str, Any] = {
        "baseline_frame": baseline_frame,
        "baseline_time_s": round(float(tr.times[hit[0]]), 3),
        "heldout_from_s": round(float(tr.times[held[0]]), 3),
        "heldout_count": len(held),
        "replica_source_frame": avatar.metadata.get("source_frame"),
        "gaussians": {"replica": avatar.count, "one-shot": baseline.count},
        "seconds": round(time.monotonic() - t0, 1),
        "note": "each avatar is scored against the real frame cropped where its own camera looks",
    }
    report = EvalReport(
        clip=clip.name,
        frames=[int(tr.frame_index[k]) for k in held],
        methods={name: run.scores for name, run in runs.items()},
        info=info,
    )
    return report, runs

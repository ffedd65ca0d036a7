"""Streaming video decode for avatar creation (PyAV): probe a clip, iterate its frames.

Nothing here holds more than one decoded frame (plus PyAV's own small decoder
queue): :func:`iter_frames` yields frames one at a time, optionally thinned to
a maximum rate and scaled down by swscale inside PyAV, so memory does not grow
with the clip's length or resolution.

Errors are :class:`VideoAvatarError` subclasses with messages that say what is
wrong and what to do (:class:`NotAVideoError`, :class:`ClipTooLongError`,
:class:`ClipTooShortError`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MAX_CLIP_S = 300.0  # 5 min
MIN_CLIP_S = 3.0
SHORT_CLIP_S = 10.0  # below this a warning: a longer clip gives a better replica


class VideoAvatarError(ValueError):
    """The clip cannot become a replica; the message says why (with the frame or second) and what to do."""


class NotAVideoError(VideoAvatarError):
    pass


class ClipTooLongError(VideoAvatarError):
    pass


class ClipTooShortError(VideoAvatarError):
    pass


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a clip (after the rotation a phone stored is applied)."""

    path: str
    width: int  # displayed width (after rotation)
    height: int
    fps: float  # average frame rate
    duration_s: float  # from the container; may be an estimate
    frames: int  # from the container, 0 when it does not say
    rotation: int  # degrees counter-clockwise applied to decoded frames (0, 90, 180, 270)
    has_audio: bool
    codec: str


@dataclass
class VideoFrame:
    index: int  # decode order number of the frame in the clip (0-based, counting every frame)
    time_s: float  # presentation time from the start of the stream
    rgb: np.ndarray  # uint8 [H, W, 3]


def _open(path: Path):  # av.container.InputContainer
    import av

    if not path.is_file():
        raise NotAVideoError(f"{path}: no such file")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise NotAVideoError(
            f"{path}: not a video PyAV can read ({exc}); give an MP4, MOV, WebM or MKV clip"
        ) from None
    if not container.streams.video:
        container.close()
        raise NotAVideoError(f"{path}: the file has no video stream (audio only?); give a video clip")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` and read its header; raises :class:`NotAVideoError` or :class:`ClipTooLongError`."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = float(container.duration) / av.time_base
        frames = int(stream.frames or 0)
        if duration <= 0 and frames and fps:
            duration = frames / fps
        # the first frame tells the real size and rotation (phones store portrait clips rotated)
        rotation = 0
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        try:
            for frame in container.decode(stream):
                rotation = round(getattr(frame, "rotation", 0) or 0) % 360
                width, height = frame.width, frame.height
                break
            else:
                raise NotAVideoError(f"{path}: the video stream has no frames")
        except av.FFmpegError as exc:
            raise NotAVideoError(f"{path}: the video stream cannot be decoded ({exc})") from None
        if rotation in (90, 270):
            width, height = height, width
        if width < 16 or height < 16:
            raise NotAVideoError(f"{path}: video frames are {width}x{height}; too small for a face")
        info = VideoInfo(
            path=str(path),
            width=width,
            height=height,
            fps=fps if fps > 0 else 25.0,
            duration_s=duration,
            frames=frames,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            codec=str(stream.codec_context.name),
        )
    finally:
        container.close()
    if info.duration_s > MAX_CLIP_S:
        raise ClipTooLongError(
            f"{path}: the clip is {info.duration_s:.0f} s long; at most {MAX_CLIP_S:.0f} s (5 min) are used "
            f"for a replica: cut it (e.g. ffmpeg -i {path.name} -t 120 -c copy short.mp4)"
        )
    return info


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) scaled so that the longer side is at most ``max_side`` (even numbers, aspect kept)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, round(width * s / 2) * 2), max(2, round(height * s / 2) * 2)


def iter_frames(
    path: str | Path,
    max_side: int | None = None,
    max_fps: float | None = None,
    indices: set[int] | None = None,
    max_duration_s: float = MAX_CLIP_S,
) -> Iterator[VideoFrame]:
    """Decode ``path`` frame by frame (one frame in memory at a time).

    ``max_side`` scales frames down (swscale, in PyAV) so the longer side fits;
    ``max_fps`` keeps frames at most that often (by presentation time);
    ``indices`` keeps only those frame numbers (decode order, counting every
    frame); decoding stops after the last wanted index. A stream longer than
    ``max_duration_s`` raises :class:`ClipTooLongError` naming the second.
    """
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decode keeps up with tracking on two cores
        tb = stream.time_base or Fraction(1, 90000)
        last_wanted = max(indices) if indices else None
        next_t = -math.inf
        t0: float | None = None
        k = -1
        try:
            for frame in container.decode(stream):
                k += 1
                if last_wanted is not None and k > last_wanted:
                    break
                pts = frame.pts if frame.pts is not None else frame.dts
                t = float(pts * tb) if pts is not None else k / 25.0
                if t0 is None:
                    t0 = t
                t -= t0
                if t > max_duration_s:
                    raise ClipTooLongError(
                        f"{path}: the clip runs past {max_duration_s:.0f} s (frame {k} at {t:.1f} s); "
                        "at most 5 min are used for a replica: cut it"
                    )
                if indices is not None and k not in indices:
                    continue
                if max_fps and indices is None:
                    period = 1.0 / max_fps
                    if t < next_t - 0.25 * period:
                        continue
                    # an absolute schedule (start + k·period), re-anchored after a gap in the stream
                    next_t = next_t + period if t - next_t < period else t + period
                rot = round(getattr(frame, "rotation", 0) or 0) % 360
                w, h = (frame.height, frame.width) if rot in (90, 270) else (frame.width, frame.height)
                sw, sh = scaled_size(w, h, max_side)
                if rot in (90, 270):
                    sw, sh = sh, sw
                rgb = frame.to_ndarray(format="rgb24", width=sw, height=sh)
                if rot:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=rot // 90))
                yield VideoFrame(index=k, time_s=t, rgb=rgb)
        except av.FFmpegError as exc:
            raise NotAVideoError(f"{path}: decoding failed at frame {k + 1} ({exc})") from None
    finally:
        container.close()

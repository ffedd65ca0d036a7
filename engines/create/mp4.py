"""Write an MP4 (H.264 yuv420p + AAC mono) from RGB frames and optional PCM, streaming.

Used by the synthetic-capture generator, the test-media builders and the
self-reenactment report. Frames are encoded as they arrive (nothing holds the
whole clip); the audio for frame ``k`` (media time ``[k/fps, (k+1)/fps)``) is
muxed right after it, so the two streams stay interleaved.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterable
from pathlib import Path

import numpy as np


class Mp4Error(RuntimeError):
    """The MP4 could not be written."""


def write_mp4(
    path: str | Path,
    frames: Iterable[np.ndarray],  # each uint8 [H, W, 3] RGB, all the same size
    fps: int,
    audio: np.ndarray | None = None,  # [N] float32 in [-1, 1], mono
    sample_rate: int = 22050,
    crf: int = 18,
) -> int:
    """Encode ``frames`` (and ``audio``) into ``path``; returns the number of frames written.

    Odd frame sizes are cropped by one pixel (yuv420p needs even sides).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = None
    if audio is not None:
        pcm = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
        pcm = (pcm * 32767.0).astype(np.int16)
    try:
        container = av.open(str(path), mode="w")
    except (av.error.FFmpegError, OSError) as exc:
        raise Mp4Error(f"cannot write {path}: {exc}") from exc
    count = 0
    with container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "veryfast"}
        astream = None
        if pcm is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        sent = 0  # audio samples muxed so far
        for frame in frames:
            img = np.asarray(frame)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise Mp4Error(f"frames must be uint8 [H, W, 3], got {img.shape} {img.dtype}")
            h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
            if count == 0:
                vstream.width, vstream.height = w, h
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
            vf.pts = count
            vf.time_base = fractions.Fraction(1, fps)
            container.mux(vstream.encode(vf))
            count += 1
            if pcm is not None and astream is not None:
                until = min(len(pcm), round(count * sample_rate / fps))
                if until > sent:
                    af = av.AudioFrame.from_ndarray(
                        pcm[sent:until].reshape(1, -1), format="s16", layout="mono"
                    )
                    af.sample_rate = sample_rate
                    af.pts = sent
                    af.time_base = fractions.Fraction(1, sample_rate)
                    container.mux(astream.encode(af))
                    sent = until
        if count == 0:
            raise Mp4Error(f"no frames to write to {path}")
        container.mux(vstream.encode(None))
        if astream is not None:
            container.mux(astream.encode(None))
    return count


def read_frames(path: str | Path, every: int = 1, limit: int | None = None) -> list[np.ndarray]:
    """Decoded RGB frames (uint8 [H, W, 3]) of a small clip: every ``every``-th, at most ``limit``.

    For tests and reports only; the replica builder streams its input instead.
    """
    import av

    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k % every == 0:
                out.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(out) >= limit:
                    break
    return out

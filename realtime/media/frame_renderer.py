"""Rig parameters → video frames for one avatar at one output size, at any rung of the degradation ladder.

:class:`FrameRenderer` wraps the engine's plate renderer
(:class:`engines.splat.render.Renderer`, which draws the static background once
per size and level of detail) and hands out ``av.VideoFrame``s at the output
size. The ladder (:func:`ladder_for`) lowers the internal render scale and the
avatar's level of detail together before it repeats frames.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from av import VideoFrame

from engines.splat.rasterize import RenderBackend


@dataclass(frozen=True)
class Level:
    """One rung of the degradation ladder."""

    scale: float  # internal render scale (the frame is scaled back up to the output size)
    lod: int  # avatar level of detail (0 = all Gaussians)
    render_every: int  # 1 = every frame; 2 = every other frame, the previous one repeated


def ladder_for(lod_count: int) -> tuple[Level, ...]:
    """Full quality → lower render scale → fewer Gaussians → repeat every other frame.

    Scale and level of detail step down together in small rungs, so a machine that cannot draw every
    frame at full size still sends fresh (softer) faces at full frame rate before it repeats any.
    """
    mid = min(1, lod_count)  # 50 % Gaussians when the avatar has it
    low = lod_count  # the smallest level it has
    rungs = [Level(1.0, 0, 1), Level(0.75, 0, 1), Level(0.75, mid, 1), Level(0.5, mid, 1), Level(0.5, low, 1)]
    unique: list[Level] = []
    for rung in rungs:
        if rung not in unique:
            unique.append(rung)
    return (*unique, Level(0.5, low, 2))


PixelFormat = Literal["yuv420p", "rgb24"]  # what a WebRTC encoder takes | what Pipecat images carry


class FrameRenderer:
    """Renders one avatar at one output size, at any ladder level, to ``av.VideoFrame``s.

    ``pixel_format``: ``yuv420p`` for the server's WebRTC tracks (the I420 layout VP8 encodes, BT.601
    limited range, see :mod:`engines.splat.yuv`), ``rgb24`` for Pipecat's ``OutputImageRawFrame``
    (the Pipecat service).
    """

    def __init__(
        self,
        avatar: Any,
        size: tuple[int, int],
        backend: RenderBackend = "cpu",
        pixel_format: PixelFormat = "yuv420p",
    ) -> None:
        # imported here: numba compiles on first use. The engine's Renderer draws the static
        # background once per size/LOD as a plate and composites only the moving layers each frame.
        from engines.splat.render import Renderer as SplatRenderer

        self._splat = SplatRenderer(avatar, backend)
        self.avatar = avatar
        self.size = size  # (H, W)
        self.backend = backend
        self.pixel_format = pixel_format
        self.channels: tuple[str, ...] = tuple(avatar.channels)
        self.levels = ladder_for(len(getattr(avatar, "lods", ())))
        self.max_batch = 32 if backend == "torch" else 1
        self._pool = _FramePool(size)

    def level_size(self, level: int) -> tuple[int, int]:
        s = self.levels[level].scale
        h, w = self.size
        return max(16, round(h * s / 2) * 2), max(16, round(w * s / 2) * 2)

    def render(self, params: np.ndarray, level: int) -> np.ndarray:
        """params [B, C] float32 → images in the pixel format at the level's internal size (h, w):
        uint8 I420 [B, h·3/2, w] for ``yuv420p`` (drawn as I420 by the rasteriser: no RGB image, no
        colour conversion afterwards), uint8 [B, h, w, 3] for ``rgb24``."""
        lvl = self.levels[level]
        size = self.level_size(level)
        if self.pixel_format == "yuv420p":
            return self._splat.render_i420(params, size=size, lod=lvl.lod)
        return np.asarray(self._splat.render(params, size=size, lod=lvl.lod))

    def render_frames(self, params: np.ndarray, level: int) -> list[VideoFrame]:
        """params [B, C] float32 → B frames at the output size: :meth:`render` + :meth:`to_video_frame`.

        At full size in ``yuv420p`` the rasteriser draws straight into each frame's own planes (no
        image array, no copy into the frame). Those frames come from a small pool (:class:`_FramePool`):
        a frame is drawn into again only once nothing else holds it, so a frame handed out never
        changes while anyone can still see it."""
        lvl = self.levels[level]
        size = self.level_size(level)
        if self.pixel_format == "yuv420p" and size == self.size:
            taken = [self._pool.take() for _ in range(params.shape[0])]
            if all(t is not None for t in taken):
                frames = [t[0] for t in taken if t is not None]
                self._splat.render_i420_into(
                    params, [t[1] for t in taken if t is not None], size=size, lod=lvl.lod
                )
                return frames
        return [self.to_video_frame(image) for image in self.render(params, level)]

    def to_video_frame(self, image: np.ndarray) -> VideoFrame:
        """One image of :meth:`render` → a frame at the output size (scaled up when rendered smaller)."""
        h, w = self.size
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self.pixel_format)
        if (frame.height, frame.width) == (h, w):
            return frame
        return frame.reformat(width=w, height=h, format=self.pixel_format)

    def warmup(self) -> float:
        """Compile and run every level once; returns seconds taken."""
        t = time.perf_counter()
        neutral = np.asarray(self.avatar.neutral(1), np.float32)
        for level in range(len(self.levels)):
            self.render_frames(neutral, level)
        return time.perf_counter() - t


Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


class _FramePool:
    """Full-size yuv420p frames (with writable views of their planes) drawn into again once nobody holds them.

    A new 512 px frame is 384 kB, over the server's fixed mmap threshold
    (:func:`realtime.web.memory.tune_allocator`): each one was a fresh mapping that the rasteriser then
    page-faulted in, ~96 minor faults and ~0.3 ms of kernel CPU per frame on the render worker. A
    frame handed out is held by whoever uses it (the session's outlet, which may repeat it; the RTP
    sender while it encodes it; a recorder); when the pool's own references are the only ones left
    (CPython's reference count says so exactly), no one can read the frame any more and its planes
    can take the next picture. When every pooled frame is held, :meth:`take` makes a new one (kept
    while the pool has room, else handed out unpooled). One FrameRenderer serves every session of its
    avatar, and a session holds ~3 frames at a time (the one its outlet may repeat, one being encoded,
    one drawn ahead): ``keep`` 12 covers 3-4 sessions, 4.5 MB at 512 px.
    """

    def __init__(self, size: tuple[int, int], keep: int = 12) -> None:
        self.size = size
        self.keep = keep
        self._frames: list[VideoFrame] = []
        self._planes: list[Planes] = []
        self._unheld: list[int] = []  # per pooled frame: its reference count when only the pool holds it
        self._lock = threading.Lock()  # render workers may draw two frames of one session at once
        self.reused = 0  # frames handed out again (for tests and diagnostics)

    def take(self) -> tuple[VideoFrame, Planes] | None:
        """A frame nobody else holds and its plane views, or None when its rows are padded (no views)."""
        with self._lock:
            for i in range(len(self._frames)):
                if _references(self._frames, i) == self._unheld[i]:
                    self.reused += 1
                    return self._frames[i], self._planes[i]
            h, w = self.size
            frame = VideoFrame(w, h, "yuv420p")
            views = _i420_plane_views(frame)
            if views is None:
                return None
            if len(self._frames) >= self.keep:
                return frame, views
            self._frames.append(frame)
            self._planes.append(views)
            del frame  # counted with no reference but the pool's own
            self._unheld.append(_references(self._frames, -1))
            return self._frames[-1], views


def _references(frames: list[VideoFrame], i: int) -> int:
    """``frames[i]``'s reference count, counted the same way for the baseline and every check."""
    return sys.getrefcount(frames[i])


def _i420_plane_views(frame: VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Writable views (Y [H, W], U, V [H/2, W/2]) of a new yuv420p frame's planes, or None when a plane's
    rows are padded (line size > width: the views would not be contiguous)."""
    views = []
    for plane in frame.planes:
        if plane.line_size != plane.width:
            return None
        views.append(
            np.frombuffer(memoryview(plane), np.uint8, count=plane.width * plane.height).reshape(
                plane.height, plane.width
            )
        )
    y, u, v = views
    return y, u, v

"""One session's frame clock: the absolute schedule that prepares, renders and releases frame after frame.

:class:`FrameClock`: frame ``k`` is prepared one frame ahead
(``t0 + k/fps - lead``), rendered by its deadline ``t0 + k/fps`` or replaced
by the previous image (a counted drop), and then released together with its
audio to the tracks. It steps down the ladder when frames come too close to
their deadlines and back up when headroom returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from av import VideoFrame

from realtime.media.clock import sleep_until
from realtime.media.frame_renderer import FrameRenderer
from realtime.media.scheduler import Scheduler
from realtime.media.stream import AvatarStream, FrameJob

logger = logging.getLogger(__name__)


Release = Callable[[FrameJob, VideoFrame, bool], None]  # (job, frame, repeated)
STALE_FRAMES = (
    2  # a render job that cannot start within this many frame periods after its deadline is dropped
)


@dataclass
class ClockStats:
    frames: int = 0
    repeated: int = 0  # a late frame replaced by the previous one
    skipped_by_ladder: int = 0  # frames the ladder chose not to render
    level: int = 0
    level_changes: int = 0


class FrameClock:
    """One session's absolute frame schedule (see module docstring)."""

    def __init__(
        self,
        stream: AvatarStream,
        scheduler: Scheduler,
        renderer: FrameRenderer,
        release: Release,
        lead_frames: float = 1.0,
        adaptive: bool = True,
    ) -> None:
        self.stream = stream
        self.scheduler = scheduler
        self.renderer = renderer
        self.release = release
        self.period = 1.0 / stream.fps
        self.lead = lead_frames * self.period
        self.adaptive = adaptive
        self.stats = ClockStats()
        self._newest: VideoFrame | None = None  # the newest finished image, shown when a frame is late
        self._newest_k = -1
        self._task: asyncio.Task[None] | None = None
        self._slack: list[float] = []  # recent (deadline - done) / period
        self._since_change = 0
        self.t0: float | None = None

    def start(self, t0: float) -> None:
        if self._task is None:
            self.t0 = t0
            self._task = asyncio.get_running_loop().create_task(self._run(t0), name="splatcast-frame-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self, t0: float) -> None:
        try:
            while True:
                await self._one_frame(t0)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("frame-clock: stopped on an unexpected error")
            raise

    async def _one_frame(self, t0: float) -> None:
        k = self.stream.frame_index
        due = t0 + k * self.period
        await sleep_until(due - self.lead)
        t = time.perf_counter()
        job = self.stream.next_frame_job()
        self.scheduler.timings.observe("motion", (time.perf_counter() - t) * 1000.0)
        level = self.stats.level
        frame: VideoFrame | None = None
        every = self.renderer.levels[level].render_every
        skipped = every > 1 and k % every != 0 and self._newest is not None
        if skipped:
            self.stats.skipped_by_ladder += 1
        else:
            # a render may finish after its own deadline: it is not cancelled, since a late image is still
            # the newest face for the frames that follow; the worker drops it only if it cannot even start
            # within STALE_FRAMES periods
            fut = self.scheduler.submit(
                self.renderer, job.params, deadline=due + STALE_FRAMES * self.period, level=level, owner=self
            )
            fut.add_done_callback(functools.partial(self._rendered, k))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, due - time.monotonic()))
            if fut.done() and fut.result() is not None:
                frame = fut.result()
                self._note_slack((due - time.monotonic()) / self.period)
            else:
                self._note_slack(-1.0)
        repeated = frame is None
        if frame is None:
            if self._newest is None:  # nothing to show yet: wait for the very first image
                frame = await self._first_frame(job)
                repeated = False
            else:
                frame = _copy(self._newest)  # a fresh object: the encoder may still hold the last one
                if not skipped:  # this frame's own image missed its deadline: a counted repeat
                    self.stats.repeated += 1
        self.stats.frames += 1
        lateness = (time.monotonic() - due) * 1000.0
        self.scheduler.timings.observe("frame_lateness", max(0.0, lateness))
        self.release(job, frame, repeated)

    def _rendered(self, k: int, fut: asyncio.Future[VideoFrame | None]) -> None:
        """Keep the newest finished image (renders may complete out of their frame's time)."""
        if fut.cancelled() or fut.result() is None or k < self._newest_k:
            return
        self._newest, self._newest_k = fut.result(), k

    async def _first_frame(self, job: FrameJob) -> VideoFrame:
        loop = asyncio.get_running_loop()
        images = await loop.run_in_executor(None, self.renderer.render, job.params[None], self.stats.level)
        frame = self.renderer.to_video_frame(images[0])
        self._newest, self._newest_k = frame, job.index
        return frame

    def _note_slack(self, slack: float) -> None:
        """Step down when frames finish too close to their deadline, up when there is room."""
        if not self.adaptive:
            return
        self._slack.append(slack)
        self._since_change += 1
        if len(self._slack) > 25:
            self._slack.pop(0)
        if self._since_change < 12:
            return
        recent = self._slack[-12:]
        worst = min(recent)
        levels = len(self.renderer.levels)
        if (worst < 0.05 or sum(s < 0.15 for s in recent) >= 3) and self.stats.level < levels - 1:
            self._change(self.stats.level + 1)
        elif self.stats.level > 0 and len(self._slack) >= 25 and min(self._slack) > 0.5:
            self._change(self.stats.level - 1)

    def _change(self, level: int) -> None:
        logger.info("frame-clock: ladder level %d → %d", self.stats.level, level)
        self.stats.level = level
        self.stats.level_changes += 1
        self._since_change = 0
        self._slack.clear()


def _copy(frame: VideoFrame) -> VideoFrame:
    return VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")

"""Frame scheduling: a frame clock per session, one render worker pool for all sessions.

* :class:`Renderer` turns rig parameters into video frames for one avatar, at a
  quality level of the degradation ladder (render scale, level of detail).
* :class:`Scheduler` owns the render worker thread(s). Each frame is a job with
  a deadline (the wall time its audio is due to leave); jobs run
  earliest-deadline-first, and jobs for the same avatar and level that fall due
  in the same tick are rendered as one batch when the backend takes batches.
  It times every stage into histograms and says how many sessions fit
  (admission control).
* :class:`FrameClock` is one session's absolute schedule: frame ``k`` is
  prepared one frame ahead (``t0 + k/fps - lead``), rendered by its deadline
  ``t0 + k/fps`` or replaced by the previous image (a counted drop), and then
  released together with its audio to the tracks. It steps down the ladder when
  frames come too close to their deadlines and back up when headroom returns.

numba's CPU rasteriser releases the GIL and uses every core itself, so one
worker thread is the right pool size on a CPU; batching pays off on a GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from av import VideoFrame

from realtime.avatar_stream import AvatarStream, FrameJob
from realtime.clock import sleep_until
from realtime.metrics import StageTimings

logger = logging.getLogger(__name__)


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


class Renderer:
    """Renders one avatar at one output size, at any ladder level, to ``av.VideoFrame``s."""

    def __init__(self, avatar: Any, size: tuple[int, int], backend: str = "cpu") -> None:
        # imported here: numba compiles on first use. The engine's Renderer draws the static
        # background once per size/LOD as a plate and composites only the moving layers each frame.
        from engines.splat.render import Renderer as SplatRenderer

        self._splat = SplatRenderer(avatar, backend)
        self.avatar = avatar
        self.size = size  # (H, W)
        self.backend = backend
        self.channels: tuple[str, ...] = tuple(avatar.channels)
        self.levels = ladder_for(len(getattr(avatar, "lods", ())))
        self.max_batch = 32 if backend == "torch" else 1

    def level_size(self, level: int) -> tuple[int, int]:
        s = self.levels[level].scale
        h, w = self.size
        return max(16, round(h * s / 2) * 2), max(16, round(w * s / 2) * 2)

    def render(self, params: np.ndarray, level: int) -> np.ndarray:
        """params [B, C] float32 → uint8 [B, h, w, 3] at the level's internal size."""
        lvl = self.levels[level]
        return np.asarray(self._splat.render(params, size=self.level_size(level), lod=lvl.lod))

    def to_video_frame(self, image: np.ndarray) -> VideoFrame:
        """uint8 [h, w, 3] → a yuv420p frame at the output size (scaled up when rendered smaller)."""
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        h, w = self.size
        return frame.reformat(width=w, height=h, format="yuv420p")

    def warmup(self) -> float:
        """Compile and run every level once; returns seconds taken."""
        t = time.perf_counter()
        neutral = np.asarray(self.avatar.neutral(1), np.float32)
        for level in range(len(self.levels)):
            self.to_video_frame(self.render(neutral, level)[0])
        return time.perf_counter() - t


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    renderer: Renderer = field(compare=False)
    params: np.ndarray = field(compare=False)  # [C]
    level: int = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[VideoFrame | None] = field(compare=False)
    owner: object = field(default=None, compare=False)  # the session's frame clock (None: standalone job)


class Scheduler:
    """EDF render worker pool shared by every session; timing histograms; admission control."""

    def __init__(self, fps: int = 25, workers: int = 1, headroom: float = 0.8) -> None:
        self.fps = fps
        self.period = 1.0 / fps
        self.headroom = headroom
        self.timings = StageTimings()
        self._heap: list[_Job] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._cost_ms: dict[int, float] = {}  # EMA of render+convert ms per frame, per level
        self.sessions = 0
        self.rendered = 0
        self.skipped_stale = 0
        self.superseded = 0  # jobs skipped because their session had queued a newer frame
        self.batches = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"splatcast-render-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # --- jobs --------------------------------------------------------------------------------------
    def submit(
        self, renderer: Renderer, params: np.ndarray, deadline: float, level: int, owner: object = None
    ) -> asyncio.Future[VideoFrame | None]:
        """Queue one frame; the future gets the frame, or None when it could not be done in time.

        A job whose ``owner`` has queued a newer job by the time a worker gets to it is skipped: its
        frame is already due, and the newer one will be the freshest image anyway.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[VideoFrame | None] = loop.create_future()
        job = _Job(deadline, next(self._seq), renderer, params, level, loop, fut, owner)
        with self._cv:
            if self._closed:
                fut.set_result(None)
                return fut
            heapq.heappush(self._heap, job)
            self._cv.notify()
        return fut

    def _take_batch(self) -> list[_Job] | None:
        with self._cv:
            while not self._heap and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            first = heapq.heappop(self._heap)
            while self._superseded(first):
                self.superseded += 1
                self._resolve(first, None)  # thread-safe: resolved on the session's loop
                if not self._heap:
                    return []
                first = heapq.heappop(self._heap)
            batch = [first]
            if first.renderer.max_batch > 1:
                horizon = first.deadline + self.period / 2
                keep: list[_Job] = []
                while (
                    self._heap and self._heap[0].deadline <= horizon and len(batch) < first.renderer.max_batch
                ):
                    job = heapq.heappop(self._heap)
                    (batch if job.renderer is first.renderer and job.level == first.level else keep).append(
                        job
                    )
                for job in keep:
                    heapq.heappush(self._heap, job)
            return batch

    def _superseded(self, job: _Job) -> bool:
        """The job's session has queued a newer frame (call with the lock held)."""
        return job.owner is not None and any(j.owner is job.owner and j.seq > job.seq for j in self._heap)

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run_batch(batch)
            # while this worker waits for the next job, nothing of the last one (its session's clock,
            # stream and frames) stays referenced from here: a closed session is freed at once
            del batch

    def _run_batch(self, batch: list[_Job]) -> None:
        now = time.monotonic()
        live = [j for j in batch if not j.future.cancelled() and j.deadline > now]
        for j in batch:
            if j not in live:
                self.skipped_stale += 1
                self._resolve(j, None)
        if not live:
            return
        try:
            t = time.perf_counter()
            images = live[0].renderer.render(np.stack([j.params for j in live]), live[0].level)
            frames = [live[0].renderer.to_video_frame(img) for img in images]
            ms = (time.perf_counter() - t) * 1000.0
        except Exception:
            logger.exception("scheduler: render failed for a batch of %d", len(live))
            for j in live:
                self._resolve(j, None)
            return
        per_frame = ms / len(live)
        self.timings.observe("render", per_frame)
        self._learn_cost(live[0].level, per_frame)
        self.rendered += len(live)
        self.batches += 1
        for j, frame in zip(live, frames, strict=True):
            self._resolve(j, frame)

    @staticmethod
    def _resolve(job: _Job, frame: VideoFrame | None) -> None:
        def done() -> None:
            if not job.future.done():
                job.future.set_result(frame)

        with contextlib.suppress(RuntimeError):  # the session's loop already closed
            job.loop.call_soon_threadsafe(done)

    def _learn_cost(self, level: int, ms: float) -> None:
        old = self._cost_ms.get(level)
        self._cost_ms[level] = ms if old is None else 0.9 * old + 0.1 * ms

    # --- capacity ------------------------------------------------------------------------------------
    def frame_cost_ms(self, level: int = 0) -> float | None:
        """Measured cost of one frame for one session: render (+ encode, which shares the CPU)."""
        render = self._cost_ms.get(level)
        if render is None:
            return None
        encode = self.timings.stages["encode"].snapshot()["mean_ms"]
        return render + encode

    def capacity(self) -> int:
        """How many sessions hold full frame rate at full quality, from the measured cost."""
        cost = self.frame_cost_ms(0)
        if cost is None or cost <= 0:
            return max(1, self.sessions + 1)  # nothing measured yet: admit and learn
        budget = self.period * 1000.0 * self.headroom * len(self._threads)
        return max(1, int(budget // cost))

    def admit(self, capacity: int | None = None) -> tuple[bool, float]:
        """(admitted, retry_after_s) for one more session; ``capacity`` overrides the measured one."""
        if self.sessions + 1 <= (capacity or self.capacity()):
            return True, 0.0
        return False, 10.0

    def close(self) -> None:
        with self._cv:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cv.notify_all()
        for j in pending:
            self._resolve(j, None)
        for t in self._threads:
            t.join(timeout=5)


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
        renderer: Renderer,
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

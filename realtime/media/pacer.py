"""The one frame pacer: the absolute schedule that prepares, renders and hands out frame after frame.

Both real-time consumers of an :class:`realtime.media.stream.AvatarStream` run
one :class:`FramePacer`: a server session (its frames go to the WebRTC tracks)
and the Pipecat service (its frames become ``OutputImageRawFrame``s). They
differ only in

* a **lead policy**: how far ahead of its due time a frame is prepared
  (:class:`FixedLead`: two frames, the session's tracks pace the rest;
  :class:`MeasuredLead`: the measured render cost with a margin, at most three
  frames, for Pipecat, whose transport paces nothing), and
* an **on_frame** callback: where a finished frame goes.

Frame ``k`` is due at ``t0 + k/fps``. At ``due - lead`` the pacer takes the
stream's job (rig parameters + the audio of ``[t_k, t_k+1)``) and submits its
render to the shared :class:`realtime.media.scheduler.Scheduler`; it waits for
the image until ``due``. A render that misses its due time is not cancelled
(the newest finished image is what the next frames show); frame ``k`` then goes
out with the newest image rendered so far (a counted repeat), and the audio keeps
to its schedule. One :class:`LadderController` steps the render scale and level
of detail down when frames go late and back up when headroom returns. The
pacer's task is watched: when it fails, ``on_error`` is called (a session then
closes with an error event).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Protocol

from av import VideoFrame

from realtime.media.clock import sleep_until
from realtime.media.frame_renderer import FrameRenderer
from realtime.media.scheduler import Scheduler
from realtime.media.stream import AvatarStream, FrameJob
from realtime.tasks import OnError, watch

logger = logging.getLogger(__name__)

OnFrame = Callable[[FrameJob, VideoFrame, bool], None]  # (job, frame, repeated: not this frame's own image)
STALE_FRAMES = 2  # a render that cannot start within this many periods after its frame's due time is dropped
MAX_LEAD_FRAMES = 3  # a frame is prepared at most this many periods ahead (a latency bound)


class LeadPolicy(Protocol):
    """How far ahead of its due time a frame is prepared, in seconds."""

    def lead_s(self, period: float) -> float: ...


@dataclass(frozen=True)
class FixedLead:
    """A fixed number of frame periods (a server session: its tracks pace the frames once released).

    Two by default. A session has one render in flight: frame ``k + 1`` is taken when frame ``k``'s image
    is ready, but not before ``due - lead``, so the lead is how much time a render may lose to the other
    sessions' work (a Piper chunk, another session's render, the encoders) before its frame goes out as a
    repeat. With one period a 512 px frame's render (~15 ms of CPU) plus its hand-offs took ~24 ms of wall
    time at the median on a busy 2-core machine and the tail went late, so a single session rested a rung
    or two down (``bench load``, notes/issue-16b); with one and a half the 2-session step of ``bench load``
    on a 2-core box without AVX-512 (renders ~1.7x slower) held 25 fresh FPS at rung 0 in 3 of 10 runs
    (47 repeated frames per run on average), with two in 7 of 10 (13), interleaved, 2026-12-07. Each half
    period more delays a reply's first audio and frame by 20 ms, both alike (A/V sync is unchanged).
    """

    frames: float = 2.0

    def lead_s(self, period: float) -> float:
        return self.frames * period


@dataclass(frozen=True)
class MeasuredLead:
    """The measured render cost with a margin: at least one period, at most :data:`MAX_LEAD_FRAMES`."""

    render_cost_s: float
    margin: float = 1.25

    def lead_s(self, period: float) -> float:
        return min(MAX_LEAD_FRAMES * period, max(period, self.margin * self.render_cost_s))


class LadderController:
    """One policy for stepping down and up the degradation ladder, from each frame's slack.

    Slack is ``(due - ready) / period``; a frame whose own image was not ready at its due time notes
    -1 (it went out as a repeat). A rung down costs quality, so frames that arrive on time never step
    it down, however close they come, and neither does one stall:

    * **down** (at least :attr:`SETTLE` frames after the last change): the last :attr:`LATE_SPAN`
      frames hold :attr:`LATE_DOWN` separate runs of late frames (renders regularly miss their
      time: a cheaper rung helps), or one run of late frames has lasted :attr:`WINDOW` frames (a
      second), or the median slack of the frames on time among the last :attr:`WINDOW` (most of them)
      is under :attr:`TREND` (within a few ms of the deadline for a whole second). A shorter burst (a session
      joining, Whisper or Piper taking the cores for a few hundred ms) is over before a rung down
      could help, and would cost the rung's quality for seconds after;
    * **up**: none of the last ``up_after`` frames was late and their median slack is over
      :attr:`UP_MEDIAN`. ``up_after`` starts at :attr:`WINDOW` and doubles (up to :attr:`UP_MAX`)
      whenever a rung it climbed back to is left again within :attr:`PROBATION` frames, so a rung
      the machine cannot hold is not retried every second; it is reset by a step down that was not
      such a relapse.
    """

    WINDOW = 25
    SETTLE = 12
    LATE_SPAN = 50
    LATE_DOWN = 3
    TREND = 0.1
    UP_MEDIAN = 0.5
    UP_MAX = 400
    PROBATION = 100

    def __init__(self, levels: int, adaptive: bool = True) -> None:
        self.levels = levels
        self.adaptive = adaptive
        self.level = 0
        self.changes = 0
        self.up_after = self.WINDOW
        self._slack: list[float] = []  # since the last change, at most UP_MAX
        self._since_up: int | None = None  # frames since the last step up (None: none yet)

    def note(self, slack: float) -> None:
        if not self.adaptive:
            return
        self._slack.append(slack)
        if len(self._slack) > self.UP_MAX:
            self._slack.pop(0)
        if self._since_up is not None:
            self._since_up += 1
        if len(self._slack) < self.SETTLE:
            return
        recent = self._slack[-self.WINDOW :]
        span = self._slack[-self.LATE_SPAN :]
        runs = sum(s < 0.0 and (i == 0 or span[i - 1] >= 0.0) for i, s in enumerate(span))
        on_time = [s for s in recent if s >= 0.0]
        stalled = len(recent) == self.WINDOW and not on_time
        squeezed = (
            len(recent) == self.WINDOW and len(on_time) > self.WINDOW // 2 and median(on_time) < self.TREND
        )
        if self.level < self.levels - 1 and (runs >= self.LATE_DOWN or stalled or squeezed):
            relapse = self._since_up is not None and self._since_up <= self.PROBATION
            self.up_after = min(self.UP_MAX, 2 * self.up_after) if relapse else self.WINDOW
            self._since_up = None
            late = sum(s < 0.0 for s in span)
            self._change(self.level + 1, f"{late} of the last {len(span)} frames late, in {runs} runs")
            return
        calm = self._slack[-self.up_after :]
        if (
            self.level > 0
            and len(calm) >= self.up_after
            and min(calm) >= 0.0
            and median(calm) > self.UP_MEDIAN
        ):
            self._since_up = 0
            self._change(self.level - 1, f"no frame late in {len(calm)}")

    def _change(self, level: int, why: str) -> None:
        logger.info("ladder: level %d → %d (%s)", self.level, level, why)
        self.level = level
        self.changes += 1
        self._slack.clear()


@dataclass
class PacerStats:
    frames: int = 0
    # a frame that went out with the newest older image: its own render was late, or the ladder's last
    # rung did not render it (what a viewer sees either way: a face that did not move)
    repeated: int = 0
    skipped_by_ladder: int = 0  # of those, the frames the ladder chose not to render
    level: int = 0
    level_changes: int = 0


class FramePacer:
    """One stream's absolute frame schedule (see the module docstring)."""

    def __init__(
        self,
        stream: AvatarStream,
        scheduler: Scheduler,
        renderer: FrameRenderer,
        on_frame: OnFrame,
        lead: LeadPolicy | None = None,
        adaptive: bool = True,
        on_error: OnError | None = None,
        first_image: VideoFrame | None = None,
    ) -> None:
        """``first_image``: shown until the first render finishes (without it, the first frame waits for
        its own render)."""
        self.stream = stream
        self.scheduler = scheduler
        self.renderer = renderer
        self.on_frame = on_frame
        self.on_error = on_error
        self.period = 1.0 / stream.fps
        self.lead = (lead or FixedLead()).lead_s(self.period)
        self.ladder = LadderController(len(renderer.levels), adaptive)
        self.stats = PacerStats()
        self._newest: VideoFrame | None = first_image  # the newest finished image, shown when a frame is late
        self._newest_k = -1
        self._task: asyncio.Task[None] | None = None
        self.t0: float | None = None

    def start(self, t0: float) -> None:
        """Frame ``stream.frame_index`` is due at ``t0`` (idempotent)."""
        if self._task is None:
            self.t0 = t0
            task = asyncio.get_running_loop().create_task(self._run(t0), name="splatcast-frame-pacer")
            self._task = watch(task, "frame pacer", self.on_error)

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # a failure was reported by watch()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self, t0: float) -> None:
        while True:
            await self._one_frame(t0)

    async def _one_frame(self, t0: float) -> None:
        k = self.stream.frame_index
        due = t0 + k * self.period
        await sleep_until(due - self.lead)
        t = time.perf_counter()
        job = self.stream.next_frame_job()
        self.scheduler.timings.observe("motion", (time.perf_counter() - t) * 1000.0)
        level = self.ladder.level
        frame: VideoFrame | None = None
        every = self.renderer.levels[level].render_every
        skipped = every > 1 and k % every != 0 and self._newest is not None
        if skipped:
            self.stats.skipped_by_ladder += 1
        else:
            # a render may finish after its own due time: it is not cancelled, since a late image is still
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
                slack = (due - time.monotonic()) / self.period
            else:
                slack = -1.0
            self.ladder.note(slack)
            self.stats.level, self.stats.level_changes = self.ladder.level, self.ladder.changes
        repeated = frame is None
        if frame is None:
            if self._newest is None:  # nothing to show yet: wait for the very first image
                frame = await self._first_frame(job)
                repeated = False
            else:
                frame = self._newest
                self.stats.repeated += 1
        self.stats.frames += 1
        lateness = (time.monotonic() - due) * 1000.0
        self.scheduler.timings.observe("frame_lateness", max(0.0, lateness))
        self.on_frame(job, frame, repeated)

    def _rendered(self, k: int, fut: asyncio.Future[VideoFrame | None]) -> None:
        """Keep the newest finished image (renders may complete out of their frame's time)."""
        if fut.cancelled() or fut.result() is None or k < self._newest_k:
            return
        self._newest, self._newest_k = fut.result(), k

    async def _first_frame(self, job: FrameJob) -> VideoFrame:
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(
            None, self.renderer.render_frames, job.params[None], self.ladder.level
        )
        frame = frames[0]
        self._newest, self._newest_k = frame, job.index
        return frame

"""One render worker pool for all sessions: earliest-deadline-first jobs, batching, timings, admission.

:class:`Scheduler` owns the render worker thread(s). Each frame is a job with
a deadline (the wall time its audio is due to leave); jobs run
earliest-deadline-first, and jobs for the same avatar and level that fall due
in the same tick are rendered as one batch when the backend takes batches.
It times every stage into histograms and says how many sessions fit:
admission control hands out one :class:`Lease` per session
(:meth:`Scheduler.lease`), refused with :class:`AtCapacity` when another
session would push the others below full frame rate.

On a CPU the pool has one worker per core, each rendering its frame on one
thread (:meth:`engines.splat.render.Renderer` releases the GIL): on this
2-core box a 512 px frame took 15.5 ms of CPU on one numba thread and 26.7 ms
on two (the second core's share is spent waiting at the kernels' barriers
when other work runs there), so sessions side by side on their own cores
hold more frames per second than each frame spread over both. Batching pays
off on a GPU (one worker there).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from av import VideoFrame

from realtime.media.frame_renderer import FrameRenderer
from realtime.media.timings import StageTimings

logger = logging.getLogger(__name__)


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    renderer: FrameRenderer = field(compare=False)
    params: np.ndarray = field(compare=False)  # [C]
    level: int = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[VideoFrame | None] = field(compare=False)
    owner: object = field(default=None, compare=False)  # the session's frame clock (None: standalone job)


class AtCapacity(RuntimeError):
    """No room for one more session now; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Lease:
    """One session's admission to the render pool; :meth:`release` (idempotent) when the session ends."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler: Scheduler | None = scheduler

    def release(self) -> None:
        if self._scheduler is not None:
            self._scheduler._release(self)
            self._scheduler = None

    @property
    def held(self) -> bool:
        return self._scheduler is not None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Scheduler:
    """EDF render worker pool shared by every session; timing histograms; admission control."""

    def __init__(
        self,
        fps: int = 25,
        workers: int = 1,
        headroom: float = 0.8,
        worker_setup: Callable[[], object] | None = None,
    ) -> None:
        """``worker_setup``: run first on each worker thread (e.g. how many threads its renders use)."""
        self.fps = fps
        self._worker_setup = worker_setup
        self.period = 1.0 / fps
        self.headroom = headroom
        self.timings = StageTimings()
        self._heap: list[_Job] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._cost_ms: dict[int, float] = {}  # EMA of render+convert ms per frame, per level
        self._leases: set[Lease] = set()
        # sessions' worth of CPU that other work on this machine takes now (None: nothing else runs)
        self.other_load: Callable[[], float] | None = None
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
        self, renderer: FrameRenderer, params: np.ndarray, deadline: float, level: int, owner: object = None
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
        if self._worker_setup is not None:
            self._worker_setup()
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
            t, cpu = time.perf_counter(), time.thread_time()
            frames = live[0].renderer.render_frames(np.stack([j.params for j in live]), live[0].level)
            ms = (time.perf_counter() - t) * 1000.0
            cpu_ms = (time.thread_time() - cpu) * 1000.0
        except Exception:
            logger.exception("scheduler: render failed for a batch of %d", len(live))
            for j in live:
                self._resolve(j, None)
            return
        per_frame = ms / len(live)
        self.timings.observe("render", per_frame)
        self.timings.observe("render_cpu", cpu_ms / len(live))
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

    # --- capacity and admission ---------------------------------------------------------------------
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

    @property
    def sessions(self) -> int:
        """Sessions that hold a lease now (server sessions and bot calls alike)."""
        return len(self._leases)

    def limit(self, capacity: int | None = None, max_sessions: int | None = None) -> int:
        """How many sessions may run at once: ``capacity`` (an operator's override) or the measured one,
        capped at ``max_sessions``."""
        cap = capacity or self.capacity()
        return min(cap, max_sessions) if max_sessions else cap

    def lease(self, capacity: int | None = None, max_sessions: int | None = None) -> Lease:
        """Admit one more session, or raise :class:`AtCapacity`; release the lease when it ends.

        The only way in: whoever runs a session (the server's session manager, the bot's calls)
        takes a lease here, so the count admission control sees is always the real one. Other work
        on this machine counts too: ``other_load()`` says how many sessions' worth of CPU it takes now
        (a running avatar build: see realtime.web.avatar_api.BUILD_SESSION_SHARE).
        """
        if max_sessions is not None and self.sessions >= max_sessions:
            raise AtCapacity("the server is at its session limit", retry_after=30.0)
        other = self.other_load() if self.other_load is not None else 0.0
        if self.sessions + other + 1 > (capacity or self.capacity()):
            busy = " while an avatar is being built" if other else ""
            raise AtCapacity(f"this machine is at capacity for 25 FPS sessions{busy}", retry_after=10.0)
        lease = Lease(self)
        self._leases.add(lease)
        return lease

    def _release(self, lease: Lease) -> None:
        self._leases.discard(lease)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cv.notify_all()
        for j in pending:
            self._resolve(j, None)
        for t in self._threads:
            t.join(timeout=5)

"""The degradation ladder and admission control of the render scheduler."""

from __future__ import annotations

import itertools

import pytest

from realtime.media.frame_renderer import Level, ladder_for
from realtime.media.scheduler import AtCapacity, Scheduler


def test_ladder_steps_down_resolution_and_detail_before_repeating() -> None:
    ladder = ladder_for(2)
    assert ladder[0] == Level(1.0, 0, 1)
    assert ladder[-1].render_every == 2  # repeating frames is the last resort
    assert all(rung.render_every == 1 for rung in ladder[:-1])
    costs = [rung.scale**2 * (1.0, 0.5, 0.25)[rung.lod] for rung in ladder]
    assert all(a >= b for a, b in itertools.pairwise(costs))  # each rung is no dearer than the last
    assert len(set(ladder)) == len(ladder)


def test_ladder_without_lod_levels_only_scales() -> None:
    ladder = ladder_for(0)
    assert {rung.lod for rung in ladder} == {0}
    assert [r.scale for r in ladder[:-1]] == sorted((r.scale for r in ladder[:-1]), reverse=True)


def test_admission_follows_measured_cost_and_counts_leases() -> None:
    sched = Scheduler(fps=25)
    try:
        first = sched.lease()  # nothing measured yet: admit and learn
        sched._learn_cost(0, 15.0)  # 15 ms per frame, budget 0.8 x 40 ms = 32 ms -> 2 sessions
        assert sched.capacity() == 2 and sched.limit() == 2 and sched.limit(max_sessions=1) == 1
        second = sched.lease()
        assert sched.sessions == 2
        with pytest.raises(AtCapacity, match="capacity") as refused:
            sched.lease()
        assert refused.value.retry_after > 0
        with sched.lease(capacity=3) as third:  # an operator's --capacity overrides the measure
            assert sched.sessions == 3
        assert not third.held and sched.sessions == 2
        with pytest.raises(AtCapacity, match="session limit"):
            sched.lease(capacity=10, max_sessions=2)
        second.release()
        second.release()  # idempotent: one session, one place in the count
        assert sched.sessions == 1
        first.release()
        assert sched.sessions == 0 and sched.lease() is not None
    finally:
        sched.close()


class _SlowRenderer:
    """Stands in for FrameRenderer where only the scheduling matters: renders take 0.15 s."""

    max_batch = 1

    def __init__(self) -> None:
        self.rendered: list[float] = []

    def render(self, params, level):  # type: ignore[no-untyped-def]
        import time

        import numpy as np

        time.sleep(0.15)
        self.rendered.append(float(params[0, 0]))
        return np.zeros((len(params), 16, 16, 3), np.uint8)

    def to_video_frame(self, image):  # type: ignore[no-untyped-def]
        from av import VideoFrame

        return VideoFrame.from_ndarray(image, format="rgb24")

    def render_frames(self, params, level):  # type: ignore[no-untyped-def]
        return [self.to_video_frame(image) for image in self.render(params, level)]


async def test_a_job_superseded_by_its_sessions_newer_frame_is_skipped() -> None:
    import asyncio
    import time

    import numpy as np

    sched = Scheduler(fps=25)
    renderer = _SlowRenderer()
    try:
        far = time.monotonic() + 10
        busy = sched.submit(renderer, np.full(1, 0.0, np.float32), far, 0, owner="other")  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # the worker is now inside the slow render
        old = sched.submit(renderer, np.full(1, 1.0, np.float32), far, 0, owner="session")  # type: ignore[arg-type]
        new = sched.submit(renderer, np.full(1, 2.0, np.float32), far + 0.04, 0, owner="session")  # type: ignore[arg-type]
        results = await asyncio.wait_for(asyncio.gather(busy, old, new), timeout=5)
        assert results[0] is not None and results[2] is not None
        assert results[1] is None  # never drawn: its session's newer frame was already queued
        assert renderer.rendered == [0.0, 2.0]
        assert sched.superseded == 1
    finally:
        sched.close()

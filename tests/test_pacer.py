"""FramePacer's counters: what a viewer sees as a face that did not move is counted as repeated.

A real engine (synthetic avatar, 64 px, the CPU rasteriser) and a real pacer on the event loop; the ladder
is held on its last rung (render every other frame), as a session's would be on an overloaded machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from av import VideoFrame

from engines.splat.synthetic import write_synthetic_avatar
from realtime.media.engine import Engine
from realtime.media.pacer import FramePacer, LadderController
from realtime.media.stream import FrameJob
from realtime.settings import Settings


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("avatar") / "synthetic.safetensors"
    write_synthetic_avatar(path)
    eng = Engine.load(Settings(avatar=path, size=64, capacity=4), warmup=True)
    yield eng
    eng.close()


async def _run(
    engine: Engine, level: int, frames: int
) -> tuple[FramePacer, list[tuple[int, VideoFrame, bool]]]:
    sent: list[tuple[int, VideoFrame, bool]] = []

    def on_frame(job: FrameJob, frame: VideoFrame, repeated: bool) -> None:
        sent.append((job.index, frame, repeated))

    pacer = FramePacer(engine.new_stream(), engine.scheduler, engine.renderer, on_frame, adaptive=False)
    pacer.ladder.level = level
    pacer.start(time.monotonic())
    deadline = time.monotonic() + 30.0
    while len(sent) < frames and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await pacer.stop()
    return pacer, sent


async def test_frames_the_last_rung_does_not_render_count_as_repeated(engine: Engine) -> None:
    last = len(engine.renderer.levels) - 1
    assert engine.renderer.levels[last].render_every == 2
    pacer, sent = await _run(engine, last, 20)
    assert len(sent) >= 20
    stats = pacer.stats
    assert stats.skipped_by_ladder >= len(sent) // 2 - 1  # every other frame after the first
    assert stats.repeated >= stats.skipped_by_ladder  # late renders come on top
    # the counter and what went out agree (the image a repeated frame carries is the newest finished one,
    # which on a busy machine may be a late render that was never sent itself, so it is not compared)
    flagged = sum(repeated for _, _, repeated in sent)
    assert flagged == stats.repeated
    # frames the ladder skipped never carry an image of their own
    own_images = {id(frame) for _, frame, repeated in sent if not repeated}
    assert len(own_images) == len(sent) - flagged


async def test_full_quality_renders_every_frame(engine: Engine) -> None:
    pacer, sent = await _run(engine, 0, 20)
    assert pacer.stats.skipped_by_ladder == 0
    assert sum(repeated for _, _, repeated in sent) == pacer.stats.repeated


# --- the ladder's policy (pure: slack values in, rungs out) ----------------------------------------------


def _feed(ladder: LadderController, slacks: list[float]) -> list[int]:
    levels = []
    for s in slacks:
        ladder.note(s)
        levels.append(ladder.level)
    return levels


def test_frames_on_time_never_step_the_ladder_down_however_close() -> None:
    ladder = LadderController(6)
    _feed(ladder, [0.12, 0.3, 0.02, 0.6, 0.11] * 200)  # median 0.12, some within 1 ms of their deadline
    assert ladder.level == 0 and ladder.changes == 0


def test_a_short_burst_of_late_frames_is_absorbed() -> None:
    ladder = LadderController(6)
    _feed(ladder, [0.5] * 30 + [-1.0, -1.0] + [0.5] * 30)
    assert ladder.level == 0


def test_one_stall_steps_down_only_once_it_has_lasted_a_second() -> None:
    ladder = LadderController(6)
    _feed(ladder, [0.5] * 30 + [-1.0] * (LadderController.WINDOW - 1) + [0.5] * 30)
    assert ladder.level == 0
    levels = _feed(ladder, [-1.0] * LadderController.WINDOW)
    assert levels[-1] == 1 and levels[-2] == 0


def test_late_frames_step_down_and_room_steps_back_up() -> None:
    ladder = LadderController(6)
    levels = _feed(ladder, [0.5] * 20 + [-1.0, 0.4, -1.0, 0.4, -1.0])
    assert levels[-1] == 1 and levels[-2] == 0  # the third separate late frame within two seconds
    levels = _feed(ladder, [0.7] * LadderController.WINDOW)
    assert levels[-1] == 0 and levels[-2] == 1  # a second without a late frame and half a period to spare


def test_a_sustained_squeeze_steps_down_before_frames_go_late() -> None:
    ladder = LadderController(6)
    levels = _feed(ladder, [0.05] * LadderController.WINDOW)
    assert levels[-1] == 1 and levels[-2] == 0


def test_a_rung_the_machine_cannot_hold_is_retried_ever_more_slowly() -> None:
    ladder = LadderController(6)
    late = [0.3, -1.0] * 3
    climbs = []
    for _ in range(4):
        _feed(ladder, [0.5] * 10 + late)  # down to 1
        assert ladder.level == 1
        before = ladder.changes
        n = 0
        while ladder.level == 1:
            ladder.note(0.7)
            n += 1
        assert ladder.changes == before + 1
        climbs.append(n)
    # each relapse within PROBATION doubles the wait before the next climb
    assert climbs == [25, 50, 100, 200]
    _feed(ladder, [0.5] * (LadderController.PROBATION + 10) + late)  # a step down long after the climb
    assert ladder.level == 1 and ladder.up_after == LadderController.WINDOW


def test_a_fixed_ladder_never_moves() -> None:
    ladder = LadderController(6, adaptive=False)
    _feed(ladder, [-1.0] * 100)
    assert ladder.level == 0

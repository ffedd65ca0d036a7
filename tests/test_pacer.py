"""FramePacer's counters: what a viewer sees as a face that did not move is counted as repeated.

A real engine (synthetic avatar, 64 px, the CPU rasteriser) and a real pacer on the event loop; the ladder
is held on its last rung (render every other frame), as a session's would be on an overloaded machine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from av import VideoFrame

from engines.splat.synthetic import write_synthetic_avatar
from realtime.media.engine import Engine
from realtime.media.pacer import FramePacer
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
    # the counter and what went out agree: a repeated frame is the previous frame's image object
    flagged = sum(repeated for _, _, repeated in sent)
    assert flagged == stats.repeated
    for (_, before, _), (_, frame, repeated) in itertools.pairwise(sent):
        if repeated:
            assert frame is before


async def test_full_quality_renders_every_frame(engine: Engine) -> None:
    pacer, sent = await _run(engine, 0, 20)
    assert pacer.stats.skipped_by_ladder == 0
    assert sum(repeated for _, _, repeated in sent) == pacer.stats.repeated

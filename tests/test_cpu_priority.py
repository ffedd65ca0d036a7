"""Render threads step back while latency-critical work runs (realtime.media.cpu_priority)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from realtime.media import cpu_priority
from realtime.media.cpu_priority import RenderPriority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")


@pytest.fixture
def render_thread() -> Iterator[tuple[RenderPriority, Callable[[], int], threading.Event]]:
    """A registered 'render' thread that waits until told to end; yields (priority, its nice, end)."""
    priority = RenderPriority(step=5)
    ready, end = threading.Event(), threading.Event()
    tid: list[int] = []

    def work() -> None:
        priority.register()
        tid.append(threading.get_native_id())
        ready.set()
        end.wait(10)
        priority.unregister()

    t = threading.Thread(target=work)
    t.start()
    ready.wait(5)
    yield priority, lambda: os.getpriority(os.PRIO_PROCESS, tid[0]), end
    end.set()
    t.join()


def test_render_threads_step_back_during_foreground_work_and_return(
    render_thread: tuple[RenderPriority, Callable[[], int], threading.Event],
) -> None:
    if not cpu_priority._probe_lowering():
        pytest.skip("this process may not lower a nice value again (no CAP_SYS_NICE)")
    priority, nice, _end = render_thread
    base = nice()
    version = priority.version
    with priority.foreground():
        assert priority.active and nice() == min(19, base + 5)
        with priority.foreground():  # nested (or concurrent): one spell
            assert nice() == min(19, base + 5)
        assert priority.active and nice() == min(19, base + 5)
    assert not priority.active and nice() == base
    assert priority.episodes == 1 and priority.version == version + 2


def test_without_permission_to_lower_again_nothing_changes(
    render_thread: tuple[RenderPriority, Callable[[], int], threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpu_priority, "_probe_lowering", lambda: False)
    priority, nice, _end = render_thread
    base = nice()
    with priority.foreground():
        assert not priority.active and nice() == base
    assert nice() == base and priority.episodes == 0 and priority.version == 0


def test_a_thread_registered_during_a_spell_joins_it_and_unregistered_ones_are_left_alone() -> None:
    if not cpu_priority._probe_lowering():
        pytest.skip("this process may not lower a nice value again (no CAP_SYS_NICE)")
    priority = RenderPriority(step=3)
    seen: list[int] = []

    def work() -> None:
        priority.register()
        tid = threading.get_native_id()
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        priority.unregister()
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with priority.foreground():
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert seen == [min(19, base + 3), base]


def test_transcripts_run_in_the_foreground(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import numpy as np

    from realtime.conversation import services

    entered: list[str] = []

    class Recorder:
        @contextlib.contextmanager
        def foreground(self) -> Iterator[None]:
            entered.append("in")
            yield
            entered.append("out")

    class FakeWhisper:
        def transcribe(self, pcm: np.ndarray) -> str:
            assert entered == ["in"]  # inside the spell
            return "hello"

    monkeypatch.setattr(services, "RENDER_PRIORITY", Recorder())
    assert services._transcribe_first(FakeWhisper(), np.zeros(160, np.float32)) == "hello"  # type: ignore[arg-type]
    assert entered == ["in", "out"]

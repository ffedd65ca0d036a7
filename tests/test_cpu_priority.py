"""Thread priorities: Whisper above the calls, a reply's later speech below them, the render workers
at their own (realtime.media.cpu_priority)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import pytest

from realtime.media import cpu_priority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")


def test_a_transcript_leaves_the_render_workers_at_their_own_priority() -> None:
    """While Whisper runs, the scheduler's render workers keep their nice value: stepped back, they lost
    frames of a light call for a transcript ~35 ms sooner (module docstring)."""
    import numpy as np

    from realtime.conversation import services
    from realtime.media.scheduler import Scheduler

    workers: list[int] = []
    started = threading.Barrier(3, timeout=10)  # both workers and this thread

    def setup() -> None:
        workers.append(threading.get_native_id())
        started.wait()

    scheduler = Scheduler(fps=25, workers=2, worker_setup=setup)
    try:
        started.wait()
        before = [os.getpriority(os.PRIO_PROCESS, tid) for tid in workers]
        during: list[list[int]] = []

        class FakeWhisper:
            def transcribe(self, pcm: np.ndarray) -> str:
                during.append([os.getpriority(os.PRIO_PROCESS, tid) for tid in workers])
                return "hello"

        assert services._transcribe_first(FakeWhisper(), np.zeros(160, np.float32)) == "hello"  # type: ignore[arg-type]
    finally:
        scheduler.close()
    assert len(workers) == 2
    assert during == [before]


def _may_raise() -> bool:
    """Can this process raise a thread's priority (CAP_SYS_NICE)? Probed on a throwaway thread."""
    ok: list[bool] = []

    def probe() -> None:
        tid = threading.get_native_id()
        base = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, base - 1)
            ok.append(True)
        except PermissionError:
            ok.append(False)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return ok[0]


def test_threads_a_build_starts_keep_the_foreground_priority() -> None:
    """A model's worker threads, made while it loads, run every later call at the raised priority."""
    if not _may_raise():
        pytest.skip("this process may not raise a thread's priority (no CAP_SYS_NICE)")
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    end = threading.Event()
    seen: list[int] = []

    def worker() -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        end.wait(10)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def build() -> threading.Thread:
        t = threading.Thread(target=worker)
        t.start()
        return t

    started = cpu_priority.built_in_foreground(build, nice=caller - 3)
    end.set()
    started.join()
    assert seen == [caller - 3, caller - 3]  # made at the raised priority, still there after the build
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller  # the caller is untouched


def test_a_build_that_fails_raises_in_the_caller() -> None:
    def build() -> None:
        raise ValueError("no model here")

    with pytest.raises(ValueError, match="no model here"):
        cpu_priority.built_in_foreground(build)


def test_without_permission_to_raise_the_work_runs_at_its_own_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = os.setpriority

    def refuse_raising(which: int, who: int, nice: int) -> None:
        if nice < os.getpriority(which, who):
            raise PermissionError("no CAP_SYS_NICE")
        real(which, who, nice)

    monkeypatch.setattr(os, "setpriority", refuse_raising)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert (
        cpu_priority.built_in_foreground(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        == base
    )


def test_whisper_transcribes_at_the_foreground_priority(speech_models: object) -> None:
    """The thread that does Whisper's work (CTranslate2's own, made at load) runs at FOREGROUND_NICE."""
    import numpy as np

    from realtime.conversation.services import SpeechModels

    assert isinstance(speech_models, SpeechModels)
    if not _may_raise():
        pytest.skip("this process may not raise a thread's priority (no CAP_SYS_NICE)")
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_by_thread() -> dict[str, tuple[int, int]]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                out[tid] = (int(fields[11]) + int(fields[12]), int(fields[16]))  # utime+stime, nice
        return out

    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(3 * 16_000)).astype(np.float32)  # 3 s: the encoder's ~0.1 s of CPU
    before = cpu_by_thread()
    for _ in range(3):
        speech_models.stt.transcribe(noise)
    after = cpu_by_thread()
    used = {tid: after[tid][0] - before.get(tid, (0, 0))[0] for tid in after}
    raised = sum(ticks for tid, ticks in used.items() if after[tid][1] == cpu_priority.FOREGROUND_NICE)
    caller = used.get(str(threading.get_native_id()), 0)
    assert raised >= ticks // 20  # the raised threads did the work (≥ 50 ms of CPU over three runs) ...
    assert raised > caller  # ... CTranslate2's own thread, not the caller's (the mel features)


def test_smart_turn_decides_at_its_thread_s_own_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """Smart Turn's decision runs at its executor thread's own priority: raised beside Whisper, the two held
    both cores of a 2-core box and a call's renders went late (module docstring). Only where this process
    may raise a priority is that a choice."""
    import numpy as np

    from realtime.conversation.turn_models import TurnModels

    if not _may_raise():
        pytest.skip("this process may not raise a thread's priority (no CAP_SYS_NICE)")
    analyzer = TurnModels.load().turn_analyzer()
    seen: list[int] = []
    predict = analyzer._predict_endpoint

    def spy(audio: np.ndarray) -> dict[str, object]:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return predict(audio)

    monkeypatch.setattr(analyzer, "_predict_endpoint", spy)
    analyzer._speech_start_time = 0.0
    buffer = [(0.02 * k, np.zeros(320, np.int16)) for k in range(50)]  # 1 s of silence at 16 kHz

    def decide() -> None:
        analyzer._process_speech_segment(buffer)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=decide)
    t.start()
    t.join()
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen == [base, base]


def test_transcripts_run_in_the_memory_block_the_models_carry(speech_models: object) -> None:
    """SpeechModels.stt_memory (the server: glibc's thresholds lifted) wraps every transcription."""
    from dataclasses import replace

    import numpy as np
    from pipecat.processors.frame_processor import FrameProcessor

    from realtime.conversation import services
    from realtime.conversation.pipeline import build_pipeline
    from realtime.settings import Settings

    entered: list[str] = []

    @contextlib.contextmanager
    def memory() -> Iterator[None]:
        entered.append("in")
        yield
        entered.append("out")

    class FakeWhisper:
        def transcribe(self, pcm: np.ndarray) -> str:
            assert entered == ["in"]
            return "hello"

    assert services._transcribe_first(FakeWhisper(), np.zeros(160, np.float32), memory) == "hello"  # type: ignore[arg-type]
    assert entered == ["in", "out"]

    assert isinstance(speech_models, services.SpeechModels)
    built = build_pipeline(
        Settings(brain="echo"), replace(speech_models, stt_memory=memory), FrameProcessor()
    )
    assert isinstance(built.stt, services.SharedWhisperSTTService)
    assert built.stt._memory is memory


def test_numpy_blas_runs_on_one_thread_after_single_threaded_blas() -> None:
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    assert any(p["user_api"] == "blas" for p in threadpool_info())
    assert cpu_priority.single_threaded_blas() is True
    assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")


def test_background_thread_lowers_the_caller_for_the_block_only() -> None:
    if not cpu_priority._probe_lowering():
        pytest.skip("this process may not lower a thread's nice value again (no CAP_SYS_NICE)")
    seen: list[int] = []

    def work() -> None:
        tid = threading.get_native_id()
        base = os.getpriority(os.PRIO_PROCESS, tid)
        with cpu_priority.background_thread(step=3):
            seen.append(os.getpriority(os.PRIO_PROCESS, tid) - base)
        seen.append(os.getpriority(os.PRIO_PROCESS, tid) - base)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [3, 0]


def test_without_permission_to_return_background_work_keeps_the_threads_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a pool thread lowered for good would run every later job (a transcription) in the background too
    monkeypatch.setattr(cpu_priority, "_lowering_allowed", lambda: False)
    tid = threading.get_native_id()
    base = os.getpriority(os.PRIO_PROCESS, tid)
    with cpu_priority.background_thread():
        inside = os.getpriority(os.PRIO_PROCESS, tid)
    assert inside == os.getpriority(os.PRIO_PROCESS, tid) == base

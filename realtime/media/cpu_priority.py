"""Thread priorities: work someone waits for above the calls, work ahead of its time below them.

Whisper transcribing the user's last words is not elastic: every millisecond it waits for a core is a
millisecond later the avatar answers. :func:`built_in_foreground` builds a model on a thread at
:data:`FOREGROUND_NICE`, so the worker threads the model starts (CTranslate2 runs Whisper on its own
thread, made when the model loads) inherit that priority: on a 2-core machine the event loop, the
encoders and the render workers of the live calls run at the same nice value as the rest of the
process, and autogroup scheduling would share the cores evenly between them. Raising needs
``CAP_SYS_NICE`` (or a ``RLIMIT_NICE`` that allows it); where the process lacks it, the model runs at
the thread's own priority.

The render workers keep their own priority meanwhile. They used to step back to nice +10 while Whisper
ran, and Smart Turn's decision was raised beside it: in a 512 px call on a 2-core box the two raised
threads then held both cores for the ~110 ms Smart Turn takes, the renders got ~10 % of a core, and most
turns lost 1-3 frames (``bench conversation --call --repeats 8``, 3 interleaved pairs, 2-core AVX2 box,
load 0.5-1.5: 14 / 12 / 18 repeated frames in 8 turns with both, 0 / 0 / 0 with neither; speech end →
transcript p50 453 / 465 / 457 → 506 / 466 / 506 ms, first TTS audio 562 / 575 / 576 → 618 / 573 / 614 ms).
Whisper alone at −10 keeps ~90 % of the core it shares with a render at nice 0.

Work that is ahead of its time goes the other way: :func:`background_thread`
runs a block :data:`BACKGROUND_STEP` nice levels *below* the thread's own
priority (a reply's later speech chunks, synthesised while its first ones play:
a Piper chunk took one core for 100–200 ms at a time, when three talking sessions
had frames due on both; those frames now go first and Piper takes what they leave).
Lowering a nice value again needs the same permission as raising; where the process may
not, the first :func:`background_thread` finds out (in a throwaway thread) and the blocks
change nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

logger = logging.getLogger(__name__)

# CFS weight 9548 against the event loop's and the encoders' 1024: the thread keeps ~90 % of a core it shares
FOREGROUND_NICE = -10
# CFS weight 1024 → 335: while the cores are contended, a frame's work gets ~3/4 of what such a thread would
# take; a sentence's later Piper chunks need ~6 % of a core per second of speech, which even a saturated
# 2-core box leaves them (a step of 10 would leave ~5 %: audio could starve before the ladder helps)
BACKGROUND_STEP = 5

T = TypeVar("T")


def _probe_lowering() -> bool:
    """Raise then lower the nice value of a throwaway thread: is the second step permitted?"""
    if sys.platform != "linux":
        return False
    result: list[bool] = []

    def probe() -> None:
        tid = threading.get_native_id()
        try:
            base = os.getpriority(os.PRIO_PROCESS, tid)
            if base >= 19:
                result.append(False)
                return
            os.setpriority(os.PRIO_PROCESS, tid, base + 1)
            os.setpriority(os.PRIO_PROCESS, tid, base)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, name="splatcast-nice-probe")
    t.start()
    t.join()
    return bool(result and result[0])


def built_in_foreground(build: Callable[[], T], nice: int = FOREGROUND_NICE) -> T:
    """``build()`` on a thread of its own at ``nice`` (module docstring): the threads it starts keep that
    priority for good, so a model whose worker threads are made at load runs every call there.

    Only for work that runs when someone waits for it (one thread of it: it must leave a core to the
    event loop). Where the process may not raise a thread's priority, ``build`` runs at the caller's.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            _raise_own(nice)
            result.append(build())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=run, name="splatcast-foreground-build")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@contextlib.contextmanager
def background_thread(step: int = BACKGROUND_STEP) -> Iterator[None]:
    """The calling thread runs ``step`` nice levels below its own priority for the block, then at its own
    again: work that is ahead of its time (a reply's later speech, synthesised while the first plays) gives
    the cores to the frames due now and takes what they leave. A no-op where the process may not return a
    thread to its own priority (it would stay low for good: a pool thread does other work after), or off Linux.
    """
    tid = threading.get_native_id()
    base = os.getpriority(os.PRIO_PROCESS, tid) if sys.platform == "linux" and _lowering_allowed() else None
    if base is not None:
        _set_nice(tid, base + step)
    try:
        yield
    finally:
        if base is not None:
            _set_nice(tid, base)


@functools.cache
def _lowering_allowed() -> bool:
    """May this process lower a thread's nice value again (probed once per process)."""
    return _probe_lowering()


def _set_nice(tid: int, nice: int) -> None:
    """Thread ``tid``'s nice value, clamped to Linux's range -20..19 (errors are the caller's)."""
    os.setpriority(os.PRIO_PROCESS, tid, max(-20, min(19, nice)))


def _raise_own(nice: int) -> bool:
    """Set the calling thread's nice value to ``nice``; False where it is not permitted (or not Linux)."""
    if sys.platform != "linux":
        return False
    try:
        _set_nice(threading.get_native_id(), nice)
    except PermissionError:
        _tell_no_raise()
        return False
    return True


@functools.cache
def _tell_no_raise() -> None:
    logger.info(
        "cpu priority: this process may not raise a thread's priority (no CAP_SYS_NICE): speech "
        "recognition runs at the priority of the call's other threads"
    )


def single_threaded_blas() -> bool:
    """numpy's BLAS (OpenBLAS) on one thread for the rest of the process; False where it cannot be set.

    A server's matrix work is small (Whisper's and Smart Turn's mel features, rig maths), yet OpenBLAS
    splits it over both cores, and its helper thread then spins waiting for more: ~100 ms of CPU per
    transcription here, on the core the call's event loop and Smart Turn need at that moment.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a core dependency
        logger.info("cpu priority: threadpoolctl is not installed; numpy's BLAS keeps its threads")
        return False
    threadpool_limits(limits=1, user_api="blas")
    return True

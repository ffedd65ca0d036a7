"""Latency-critical work takes the cores from the render workers while it runs.

Rendering is the elastic load of a server: a render that finishes late costs one
repeated frame (its audio leaves on time), and the ladder absorbs a slow machine.
Whisper transcribing the user's last words is not elastic: every millisecond it
waits for a core is a millisecond later the avatar answers. On a 2-core machine
the render workers of the live calls compete with it for both cores (``bench conversation --call``,
loaded box: speech end → transcript p50 1322 → 948 ms with this; notes/issue-16b).

:data:`RENDER_PRIORITY` knows the render worker threads (the scheduler registers
them). While at least one :meth:`RenderPriority.foreground` block runs anywhere in
the process, those threads run at their own nice value plus
:attr:`RenderPriority.step` (Linux: a thread's nice value is its own,
``setpriority(PRIO_PROCESS, tid)``); when the last block ends they return to it.
Lowering a nice value again needs ``CAP_SYS_NICE`` (or a ``RLIMIT_NICE`` that
allows it): where the process may not, the first :meth:`foreground` finds out
(in a throwaway thread) and the blocks change nothing.

:attr:`RenderPriority.version` changes whenever the render threads' priority
does, so the frame pacer can tell that a render lost its core on purpose (the
ladder does not step down for it).

The latency-critical work itself runs *above* the other threads:
:func:`built_in_foreground` builds a model on a thread at
:data:`FOREGROUND_NICE`, so the worker threads the model starts (CTranslate2
runs Whisper on its own thread, made when the model loads) inherit that
priority, and :func:`foreground_thread` raises the calling thread for a block
(Smart Turn's decision). On a 2-core machine the render workers are not the
only competition: the event loop, the encoders and the other sessions' threads
run at the same nice value as Whisper, and autogroup scheduling shares the cores
evenly between them. Raising needs the same permission as lowering again; where
the process lacks it, both run at the thread's own priority.

Work that is ahead of its time goes the other way: :func:`background_thread`
runs a block :data:`BACKGROUND_STEP` nice levels *below* the thread's own
priority (a reply's later speech chunks, synthesised while its first ones play:
a Piper chunk took one core for 100–200 ms at a time, when three talking sessions
had frames due on both; those frames now go first and Piper takes what they leave).
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

DEFAULT_STEP = 10  # CFS weight 1024 → 110: a render gets ~10 % of a core another thread wants
# CFS weight 9548 against the event loop's and the encoders' 1024: the thread keeps ~90 % of a core it shares
FOREGROUND_NICE = -10
# CFS weight 1024 → 335: while the cores are contended, a frame's work gets ~3/4 of what such a thread would
# take; a sentence's later Piper chunks need ~6 % of a core per second of speech, which even a saturated
# 2-core box leaves them (a step of 10 would leave ~5 %: audio could starve before the ladder helps)
BACKGROUND_STEP = 5

T = TypeVar("T")


class RenderPriority:
    """The render threads' nice value, raised while foreground work runs (module docstring)."""

    def __init__(self, step: int = DEFAULT_STEP) -> None:
        self.step = step
        self.episodes = 0  # foreground spells that lowered the render threads' priority
        self.version = 0  # +1 at each start and each end of such a spell
        self._lock = threading.Lock()
        self._threads: dict[int, int] = {}  # native thread id → its own nice value
        self._depth = 0
        self._allowed: bool | None = None  # may this process lower a nice value again (None: not probed)

    @property
    def active(self) -> bool:
        """A foreground block runs now and the render threads run at lower priority."""
        return self._depth > 0 and bool(self._allowed)

    def register(self) -> None:
        """The calling thread renders (call on the thread, before its first render)."""
        tid = threading.get_native_id()
        if sys.platform != "linux":  # elsewhere a thread's nice value is not its own
            return
        with self._lock:
            self._threads[tid] = os.getpriority(os.PRIO_PROCESS, tid)
            if self.active:
                self._set(tid, self._threads[tid] + self.step)

    def unregister(self) -> None:
        """The calling thread renders no more (its id may be reused by another thread)."""
        tid = threading.get_native_id()
        with self._lock:
            base = self._threads.pop(tid, None)
            if base is not None and self.active:
                self._set(tid, base)

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """Render threads step back for the duration of the block (nested and concurrent blocks share
        one spell)."""
        with self._lock:
            self._depth += 1
            if self._depth == 1 and self._may_lower_again():
                self.episodes += 1
                self.version += 1
                for tid, base in self._threads.items():
                    self._set(tid, base + self.step)
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._allowed:
                    self.version += 1
                    for tid, base in self._threads.items():
                        self._set(tid, base)

    def _may_lower_again(self) -> bool:
        if self._allowed is None:
            self._allowed = _lowering_allowed()
            if not self._allowed:
                logger.info(
                    "cpu priority: this process may not lower a thread's nice value again (no CAP_SYS_NICE): "
                    "render threads keep their priority while speech is transcribed"
                )
        return self._allowed

    @staticmethod
    def _set(tid: int, nice: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            _set_nice(tid, nice)


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
def foreground_thread(nice: int = FOREGROUND_NICE) -> Iterator[None]:
    """The calling thread runs at ``nice`` for the block, then at its own priority again (a no-op where
    the process may not raise it, or off Linux)."""
    tid = threading.get_native_id()
    base = os.getpriority(os.PRIO_PROCESS, tid) if sys.platform == "linux" else None
    raised = base is not None and nice < base and _raise_own(nice)
    try:
        yield
    finally:
        if raised and base is not None:
            with contextlib.suppress(PermissionError):  # a higher nice value is always permitted
                os.setpriority(os.PRIO_PROCESS, tid, base)


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
    """May this process lower a thread's nice value again (probed once: render spells and background blocks
    both ask)."""
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
        "recognition and turn decisions run at the priority of the call's other threads"
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


RENDER_PRIORITY = RenderPriority()

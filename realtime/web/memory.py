"""Memory housekeeping of a long-running server: glibc allocator settings, and handing freed pages back.

:func:`tune_allocator` runs once at start; :func:`release_freed_memory` after
a session closes (both Linux/glibc only; no-ops elsewhere).

Video frames (768 kB at 512 px), encoder buffers and audio chunks come and
go with every session. glibc's default *dynamic* mmap threshold rises to the
size of the largest block freed so far, after which such buffers are carved
from the main heap instead of being mmapped, and the heap's high-water mark
then only ratchets up as sessions come and go: in a 30-minute
``splatcast bench soak`` the main heap grew from ~300 MB to ~340 MB in 2.5
minutes while the Python object count stayed flat. Fixing the threshold keeps
big buffers in their own mappings, which return to the OS on free; capping the
arenas at two per core stops each new worker thread (executor, numba, ONNX
Runtime) from fragmenting memory of its own.

One job pays for those mappings: Whisper (CTranslate2) allocates and frees
tens of MB of activations on every transcription, each a fresh mapping under a
256 kB threshold, so every run page-faults them all in again: ~59 000 minor
faults and ~110 ms of kernel CPU per bench sentence, which took tiny.en from
~160 to ~290 ms per transcription on this 2-core box. :func:`heap_allocations`
lifts both thresholds for the length of a block (the server's transcriptions):
the buffers then come from, and go back to, the heap of the thread's arena,
which keeps them for the next run (~660 faults, no kernel time).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024  # buffers this size and larger get their own mapping
TRIM_THRESHOLD_BYTES = 128 * 1024  # glibc's default: free heap above this is handed back at once
HEAP_WINDOW_BYTES = 64 * 1024 * 1024  # inside heap_allocations(): larger than any Whisper tiny.en buffer


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold and cap its arenas; returns whether it applied (glibc on Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    arenas = 2 * (os.cpu_count() or 1)
    ok = (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        and bool(mallopt(_M_ARENA_MAX, arenas))
    )
    logger.debug("allocator: mmap threshold %d B, at most %d arenas (%s)", MMAP_THRESHOLD_BYTES, arenas, ok)
    _window.mallopt = mallopt if ok else None
    return ok


class _HeapWindow:
    """Open heap_allocations() blocks across threads; the thresholds go back when the last one ends."""

    def __init__(self) -> None:
        # glibc's mallopt once tune_allocator() applied its values (the ones to go back to); None: not tuned
        self.mallopt: Callable[[int, int], int] | None = None
        self.lock = threading.Lock()
        self.depth = 0


_window = _HeapWindow()


@contextlib.contextmanager
def heap_allocations() -> Iterator[None]:
    """Large buffers come from the heap, and freed heap is kept, while the block runs (module docstring).

    Only after :func:`tune_allocator` (elsewhere glibc's own dynamic threshold already keeps such buffers
    on the heap); concurrent blocks share one window.
    """
    mallopt = _window.mallopt
    if mallopt is None:
        yield
        return
    with _window.lock:
        _window.depth += 1
        if _window.depth == 1:
            mallopt(_M_MMAP_THRESHOLD, HEAP_WINDOW_BYTES)
            mallopt(_M_TRIM_THRESHOLD, 2 * HEAP_WINDOW_BYTES)
    try:
        yield
    finally:
        with _window.lock:
            _window.depth -= 1
            if _window.depth == 0:
                mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hand the heap pages freed by a closed session back to the OS (glibc's ``malloc_trim``; Linux only).

    A session frees tens of MB of encoder, frame and audio buffers when it ends;
    glibc keeps such pages in its per-thread arenas, so without this the
    server's RSS ratchets up session after session: in a 4-minute
    ``splatcast bench soak`` (7 sessions, 512 px) the idle RSS at the end was
    945 MB without it and 789 MB with it (baselines 688 and 641 MB).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return
    trim(0)

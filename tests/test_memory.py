"""The allocator tuning the server applies at start (glibc on Linux)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from realtime.web.memory import MMAP_THRESHOLD_BYTES, heap_allocations, tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tune_allocator_applies_on_glibc() -> None:
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018
    except AttributeError:
        pytest.skip("not glibc")
    assert tune_allocator() is True
    assert MMAP_THRESHOLD_BYTES >= 128 * 1024  # never below glibc's own default


def _faults_per_buffer(rounds: int = 8, size: int = 4 << 20) -> float:
    """Minor page faults of this thread per 4 MB buffer allocated, written and freed (as Whisper's are)."""
    import resource

    import numpy as np

    start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(rounds):
        buffer = np.empty(size, np.uint8)
        buffer.fill(1)
        del buffer
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - start) / rounds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_heap_allocations_keep_big_buffers_off_fresh_mappings() -> None:
    """Under the server's fixed threshold each big buffer is a new mapping, faulted in page by page;
    inside heap_allocations() it comes back from the heap, already faulted in."""
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018
    except AttributeError:
        pytest.skip("not glibc")
    assert tune_allocator() is True
    pages = (4 << 20) // 4096
    assert _faults_per_buffer() > pages / 2  # a fresh mapping every time
    with heap_allocations(), heap_allocations():  # concurrent blocks share one window
        _faults_per_buffer(rounds=1)  # the heap grows once
        assert _faults_per_buffer() < pages / 16
    assert _faults_per_buffer() > pages / 2  # the server's threshold is back

"""The allocator tuning the server applies at start (glibc on Linux)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from realtime.web.memory import MMAP_THRESHOLD_BYTES, tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tune_allocator_applies_on_glibc() -> None:
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018
    except AttributeError:
        pytest.skip("not glibc")
    assert tune_allocator() is True
    assert MMAP_THRESHOLD_BYTES >= 128 * 1024  # never below glibc's own default


_FAULTS = """
import json, resource
import numpy as np
from realtime.web.memory import heap_allocations, tune_allocator

def faults_per_buffer(rounds=8, size=4 << 20):
    # minor page faults of this thread per 4 MB buffer allocated, written and freed (as Whisper's are)
    start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(rounds):
        buffer = np.empty(size, np.uint8)
        buffer.fill(1)
        del buffer
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - start) / rounds

assert tune_allocator()
out = {"tuned": faults_per_buffer()}
with heap_allocations(), heap_allocations():  # concurrent blocks share one window
    faults_per_buffer(rounds=1)  # the heap grows once
    out["inside"] = faults_per_buffer()
out["after"] = faults_per_buffer()
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_heap_allocations_keep_big_buffers_off_fresh_mappings() -> None:
    """Under the server's fixed threshold each big buffer is a new mapping, faulted in page by page;
    inside heap_allocations() it comes back from the heap, already faulted in. In a fresh interpreter:
    a big heap with room to spare (this test process's) would serve the buffers without a mapping."""
    import json
    import os
    import subprocess
    from pathlib import Path

    try:
        ctypes.CDLL(None).mallopt  # noqa: B018
    except AttributeError:
        pytest.skip("not glibc")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    faults = json.loads(run.stdout)
    pages = (4 << 20) // 4096
    assert faults["tuned"] > pages / 8  # a fresh mapping every time (numpy asks for huge pages: some are)
    assert faults["inside"] < 2
    assert faults["after"] > pages / 8  # the server's thresholds are back

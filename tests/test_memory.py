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

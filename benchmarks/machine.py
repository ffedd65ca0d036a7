"""Where a benchmark ran: machine, software versions and the git commit (for the JSON reports)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "numba", "aiortc", "av", "onnxruntime", "piper-tts", "pipecat-ai")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def git_info() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the benchmark ran from."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# widest first: the CPU render's blend loop is one 16-lane vector op with AVX-512 and two with AVX2, so the
# same CPU model renders ~1.7x slower where a hypervisor hides AVX-512 (2026-12-07: AMD EPYC Zen 4 with and
# without it, `bench render` plate renderer 7.8 vs 13.1 ms)
_SIMD = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"), ("asimd", "neon"))


def widest_simd(flags: str) -> str | None:
    """The widest vector extension in a /proc/cpuinfo ``flags`` (or ``Features``) line, e.g. ``"avx2"``."""
    have = set(flags.split())
    return next((name for flag, name in _SIMD if flag in have), None)


def cpu_simd() -> str | None:
    """This machine's widest vector extension (see :func:`widest_simd`); None where /proc/cpuinfo says none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return widest_simd(line.split(":", 1)[1])
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU (and the widest vector extension it exposes), cores, memory, OS, Python and the versions of the packages that set the figures."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "simd": cpu_simd(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "gpu": None,
        "load_avg_1m_at_start": round(load[0], 2),
        "packages": versions,
    }

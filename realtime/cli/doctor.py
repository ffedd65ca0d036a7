"""``splatcast doctor``: what this machine can run, and where every bundled asset is."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from engines import assets
from realtime.settings import Settings

# Packages the default (CPU, offline) path imports at run time.
RUNTIME_PACKAGES = (
    "aiortc", "aiohttp", "av", "numpy", "numba", "onnxruntime", "piper-tts", "onnx",
    "faster-whisper", "pipecat-ai", "safetensors",
)  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_name() -> str | None:
    """Name of the first NVIDIA GPU, or None (no driver / no GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except Exception:  # any import failure (missing libs, no GPU driver) means not usable
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def _numba_threads() -> int | None:
    try:
        import numba
    except ImportError:
        return None
    return int(numba.get_num_threads())


def collect() -> dict[str, Any]:
    """Everything doctor reports, as one JSON-ready object."""
    found = assets.find_all()
    asset_paths = {name: (str(v) if isinstance(v, Path) else None) for name, v in found.items()}
    missing = {name: str(v) for name, v in found.items() if not isinstance(v, Path)}
    providers = _ort_providers()
    gpu = _gpu_name()
    packages = {dist: _version(dist) for dist in RUNTIME_PACKAGES}
    problems = [f"asset {name}: {why}" for name, why in missing.items()]
    problems += [f"package {dist} is not installed" for dist, v in packages.items() if v is None]
    if "CPUExecutionProvider" not in providers:
        problems.append("onnxruntime has no CPUExecutionProvider")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numba_threads": _numba_threads(),
        "gpu": gpu,
        "cuda_usable": gpu is not None and "CUDAExecutionProvider" in providers,
        "onnxruntime_providers": providers,
        "tensorrt": _tensorrt_version(),
        "packages": packages,
        "assets": asset_paths,
        "problems": problems,
        "ok": not problems,
    }


def _print_human(report: dict[str, Any]) -> None:
    def line(label: str, value: object, good: bool = True) -> None:
        mark = "ok " if good else "!! "
        print(f"  {mark}{label:<24} {value}")

    print("splatcast doctor")
    line("python", f"{report['python']} ({sys.executable})")
    line("cpu cores", report["cpus"])
    line("numba threads", report["numba_threads"], report["numba_threads"] is not None)
    line("onnxruntime providers", ", ".join(report["onnxruntime_providers"]) or "none",
         bool(report["onnxruntime_providers"]))  # fmt: skip
    line("gpu", report["gpu"] or "none (CPU path)")
    line("cuda usable", report["cuda_usable"])
    line("tensorrt", report["tensorrt"] or "not installed (optional: pip install 'splatcast[gpu]')")
    print(" packages")
    for dist, version in report["packages"].items():
        line(dist, version or "MISSING", version is not None)
    print(" bundled assets")
    for name, path in report["assets"].items():
        line(name, path or "MISSING", path is not None)
    if report["problems"]:
        print(" problems")
        for problem in report["problems"]:
            print(f"  !! {problem}")
    print("ready: the default path can run" if report["ok"] else "NOT ready: fix the problems above")


def doctor_command(settings: Settings, args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report)
    return 0 if report["ok"] else 1

"""``splatcast bench render``: splat render speed on a moving rig.

Renders ``--frames`` frames (after a warm-up) of the avatar at ``--size``
with ``--backend``; every frame has a different rig (jaw, mouth shapes,
blinks, head motion), ``--batch`` frames per call. Each call is timed as a
whole (``render()``: rig + rasteriser) and in its two parts (``rig.pose`` and
the rasteriser alone), so the JSON also serves as a pure-rasteriser
benchmark.

``--avatar synthetic`` (or ``synthetic:N`` for N Gaussians) benchmarks the
procedural test avatar; without ``--avatar`` the bundled default avatar is
used, or, while it is not shipped yet, a synthetic one (with a warning).

JSON keys: ``backend``, ``size``, ``gaussians``, ``ms_median``, ``ms_p95``,
``fps`` (frames per second = batch / per-call median), plus ``batch``,
``frames``, ``threads``, ``machine``, ``avatar``, ``ms_min``, ``ms_pose_median``,
``ms_raster_median``, ``cpu_ms_median``, ``ms_renderer_median`` / ``fps_renderer``
(the same frames through :class:`engines.splat.render.Renderer`, which draws the
static layer once as a plate; ``renderer_plate_frames`` says how many used it),
``warmup_s``. Timings are wall-clock
milliseconds per call, except ``cpu_ms_median``: the process CPU time of one
call summed over all threads (it shows the work done even when other
processes compete for the cores and inflate the wall clock).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import cpu_simd
from engines.splat.rasterize import RenderBackend
from realtime.settings import Settings

logger = logging.getLogger(__name__)

SYNTHETIC_DEFAULT_GAUSSIANS = 30_000


def load_bench_avatar(settings: Settings) -> tuple[Any, str]:
    """The avatar to benchmark and a label for it."""
    from engines import assets
    from engines.splat.avatar import load_avatar
    from engines.splat.synthetic import make_test_avatar

    path = settings.avatar
    if path is not None and str(path).startswith("synthetic"):
        _, _, count = str(path).partition(":")
        n = int(count) if count else SYNTHETIC_DEFAULT_GAUSSIANS
        return make_test_avatar(n), f"synthetic:{n}"
    if path is None:
        try:
            path = assets.default_avatar()
        except assets.AssetMissingError:
            logger.warning(
                "bench render: the default avatar is not shipped yet; using a synthetic avatar with %d Gaussians",
                SYNTHETIC_DEFAULT_GAUSSIANS,
            )
            return make_test_avatar(SYNTHETIC_DEFAULT_GAUSSIANS), f"synthetic:{SYNTHETIC_DEFAULT_GAUSSIANS}"
    return load_avatar(path), str(path)


def moving_rig(channels: tuple[str, ...], frames: int, fps: float = 25.0) -> np.ndarray:
    """float32 [frames, C]: talking-like jaw and mouth shapes, blinks and slow head motion."""
    t = np.arange(frames, dtype=np.float64) / fps
    out = np.zeros((frames, len(channels)), dtype=np.float32)
    curves = {
        "jawOpen": 0.35 + 0.35 * np.sin(2 * np.pi * 3.1 * t),
        "mouthFunnel": 0.3 * np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None),
        "mouthPucker": 0.4 * np.clip(np.sin(2 * np.pi * 0.9 * t + 1.0), 0, None),
        "mouthClose": 0.2 * np.clip(np.sin(2 * np.pi * 2.3 * t + 2.0), 0, None),
        "mouthSmileLeft": 0.3 + 0.1 * np.sin(2 * np.pi * 0.2 * t),
        "mouthSmileRight": 0.3 + 0.1 * np.sin(2 * np.pi * 0.2 * t),
        "eyeBlinkLeft": (np.mod(t, 2.7) < 0.15).astype(np.float64),
        "eyeBlinkRight": (np.mod(t, 2.7) < 0.15).astype(np.float64),
        "headYaw": 0.15 * np.sin(2 * np.pi * 0.25 * t),
        "headPitch": 0.08 * np.sin(2 * np.pi * 0.4 * t + 0.5),
        "headRoll": 0.05 * np.sin(2 * np.pi * 0.3 * t + 1.5),
    }
    for name, curve in curves.items():
        if name in channels:
            out[:, channels.index(name)] = curve
    return out


def _threads(backend: RenderBackend) -> int:
    if backend == "torch":
        import torch

        return int(torch.get_num_threads())
    if backend == "cpu":
        import numba

        return int(numba.get_num_threads())
    return 1


def _machine(backend: RenderBackend) -> str:
    desc = f"{platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or platform.system()}"
    simd = cpu_simd()
    if simd:
        desc += f", {simd.upper()}"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
        else:
            desc += ", torch on CPU"
    return desc


def run_render_bench(
    avatar: Any, backend: RenderBackend, size: int, frames: int, batch: int, warmup_frames: int = 5
) -> dict[str, Any]:
    """Time ``render()`` (and its two parts) on a moving rig; returns the JSON-ready figures."""
    from tqdm import tqdm

    from engines.splat.rasterize import rasterize
    from engines.splat.render import Renderer, render
    from engines.splat.rig import pose

    sync: Any = None
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            sync = torch.cuda.synchronize
    calls = max(1, -(-frames // batch))
    rig = moving_rig(avatar.channels, (calls + warmup_frames) * batch)
    camera = avatar.camera.scaled(size, size)

    start = time.perf_counter()
    if backend == "cpu":
        from engines.splat.raster_cpu import warmup

        warmup()
    for k in range(warmup_frames):
        render(avatar, rig[k * batch : (k + 1) * batch], (size, size), backend=backend)
    warmup_s = time.perf_counter() - start

    renderer = Renderer(avatar, backend)
    renderer.render(rig[:batch], (size, size))  # draws the static plate
    total, posing, raster, cpu, cached = [], [], [], [], []
    for k in tqdm(range(calls), desc=f"render {backend}", unit="call", file=sys.stderr, leave=False):
        params = rig[(warmup_frames + k) * batch : (warmup_frames + k + 1) * batch]
        c0 = time.process_time()
        t0 = time.perf_counter()
        render(avatar, params, (size, size), backend=backend)
        if sync:
            sync()
        t1 = time.perf_counter()
        cpu.append((time.process_time() - c0) * 1e3)
        posed = pose(avatar, params)
        t2 = time.perf_counter()
        rasterize(posed, camera, avatar.background, backend=backend)
        if sync:
            sync()
        t3 = time.perf_counter()
        t4 = time.perf_counter()
        renderer.render(params, (size, size))
        if sync:
            sync()
        cached.append((time.perf_counter() - t4) * 1e3)
        total.append((t1 - t0) * 1e3)
        posing.append((t2 - t1) * 1e3)
        raster.append((t3 - t2) * 1e3)
    arr = np.asarray(total)
    median = float(np.median(arr))
    return {
        "backend": backend,
        "size": size,
        "gaussians": int(avatar.count),
        "ms_median": round(median, 3),
        "ms_p95": round(float(np.percentile(arr, 95)), 3),
        "fps": round(batch * 1000.0 / median, 1),
        "batch": batch,
        "frames": calls * batch,
        "threads": _threads(backend),
        "machine": _machine(backend),
        "ms_min": round(float(arr.min()), 3),
        "ms_pose_median": round(float(np.median(posing)), 3),
        "ms_raster_median": round(float(np.median(raster)), 3),
        "cpu_ms_median": round(float(np.median(cpu)), 3),
        "ms_renderer_median": round(float(np.median(cached)), 3),
        "fps_renderer": round(batch * 1000.0 / float(np.median(cached)), 1),
        "renderer_plate_frames": renderer.plate_frames,
        "warmup_s": round(warmup_s, 2),
    }


def bench_render_command(settings: Settings, args: argparse.Namespace) -> int:
    """``splatcast bench render [--backend B] [--size S] [--frames N] [--batch K] [--json]``."""
    if args.frames < 1 or args.batch < 1:
        print("splatcast bench render: --frames and --batch must be ≥ 1", file=sys.stderr)
        return 2
    try:
        avatar, label = load_bench_avatar(settings)
    except (OSError, ValueError) as exc:
        print(f"splatcast bench render: cannot load the avatar: {exc}", file=sys.stderr)
        return 1
    try:
        result = run_render_bench(avatar, args.backend, settings.size, args.frames, args.batch)
    except ImportError as exc:
        print(f"splatcast bench render: {exc}", file=sys.stderr)
        return 1
    result["avatar"] = label if not Path(label).is_absolute() else Path(label).name
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"render benchmark — {result['avatar']} ({result['gaussians']} Gaussians), {result['machine']}")
    rows = [
        ("backend", result["backend"]),
        ("size", f"{result['size']}x{result['size']}"),
        ("batch", result["batch"]),
        ("threads", result["threads"]),
        ("frames", result["frames"]),
        ("ms per call, median", result["ms_median"]),
        ("ms per call, p95", result["ms_p95"]),
        ("  of which rig.pose (median)", result["ms_pose_median"]),
        ("  of which rasteriser (median)", result["ms_raster_median"]),
        ("CPU ms per call, all threads", result["cpu_ms_median"]),
        ("Renderer (static plate) ms, median", result["ms_renderer_median"]),
        ("Renderer frames per second", result["fps_renderer"]),
        ("frames per second", result["fps"]),
        ("warm-up s", result["warmup_s"]),
    ]
    for name, value in rows:
        print(f"  {name:<32} {value}")
    return 0

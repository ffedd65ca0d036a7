"""``splatcast bench a2v``: a2v inference latency per 40 ms chunk, one stream and batched across streams.

Measures, on the runtime chosen by ``--a2v-runtime`` (default onnx-cpu):

* ``stream_b1``: ``A2VStream.push`` of one 40 ms chunk (resampling from 48 kHz,
  features, network, pooling) — what one session pays per video frame at 25 fps;
* ``network_b1`` / ``network_b64`` (and ``network_b256`` on GPU runtimes): one
  network call for 2 steps (40 ms) with batch 1 / 64 / 256 — the scheduler's
  batched cost;
* ``push_batch_b64``: ``A2V.push_batch`` for 64 streams (features included);
* ``infer_10s``: ``A2V.infer`` on 10 s of audio.

Warm-up first, then repeats; medians and percentiles in milliseconds, JSON out.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engines.a2v.runtime import A2VRuntimeChoice
from realtime.settings import Settings

logger = logging.getLogger(__name__)

SR = 48_000
CHUNK = SR * 40 // 1000


def _time(fn: Callable[[], object], repeats: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    arr = np.array(times)
    return {
        "median_ms": round(float(np.median(arr)), 4),
        "p90_ms": round(float(np.percentile(arr, 90)), 4),
        "p99_ms": round(float(np.percentile(arr, 99)), 4),
        "min_ms": round(float(arr.min()), 4),
        "repeats": repeats,
    }


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.abs(np.sin(np.arange(n) / SR * 2 * np.pi * 3.0)) * 0.3
    return (rng.standard_normal(n) * env).astype(np.float32)


def run_benchmark(
    runtime: A2VRuntimeChoice = "onnx-cpu", fps: int = 25, repeats: int = 300
) -> dict[str, Any]:
    from engines.a2v.runtime import load_a2v

    a2v = load_a2v(runtime, fps=fps)
    audio = _speechlike(60.0)
    result: dict[str, Any] = {
        "benchmark": "a2v",
        "runtime": a2v.runtime,
        "asked_runtime": runtime,
        "fps": fps,
        "lookahead_ms": a2v.lookahead_ms,
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
    }
    stream = a2v.stream(SR)
    pos = [0]

    def push_one() -> None:
        i = pos[0] % (len(audio) - CHUNK)
        stream.push(audio[i : i + CHUNK])
        pos[0] += CHUNK

    result["stream_b1"] = _time(push_one, repeats)
    batches = [1, 64] + ([256] if a2v.runtime != "onnx-cpu" else [])
    rng = np.random.default_rng(1)
    for b in batches:
        feats = rng.standard_normal((b, 2, a2v.n_in)).astype(np.float32)
        state = a2v.zero_state(b)

        def call(f: np.ndarray = feats, s: np.ndarray = state) -> None:
            a2v._run(f, s)

        result[f"network_b{b}"] = _time(call, max(50, repeats // 2))
    streams = [a2v.stream(SR) for _ in range(64)]
    pos64 = [0]

    def push_64() -> None:
        i = pos64[0] % (len(audio) - CHUNK)
        a2v.push_batch(streams, [audio[i : i + CHUNK]] * 64)
        pos64[0] += CHUNK

    result["push_batch_b64"] = _time(push_64, max(30, repeats // 10), warmup=3)
    ten = audio[: 10 * SR]
    result["infer_10s"] = _time(lambda: a2v.infer(ten, SR), 10, warmup=2)
    return result


def bench_a2v_command(settings: Settings, args: argparse.Namespace) -> int:
    result = run_benchmark(settings.a2v_runtime, fps=settings.fps)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"a2v bench on {result['runtime']} ({result['fps']} fps, lookahead {result['lookahead_ms']:.0f} ms)"
    )
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"  {key:<16} median {value['median_ms']:8.3f} ms   p90 {value['p90_ms']:8.3f} ms")
    return 0

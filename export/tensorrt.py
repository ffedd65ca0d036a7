"""Compile the a2v ONNX graph into a TensorRT engine (FP16, one optimisation profile) with the Python API.

Command: ``splatcast export tensorrt -o ~/.cache/splatcast/a2v.plan [--onnx engines/data/a2v.onnx]
[--max-batch 64]``. The profile covers batch 1..max_batch and 1..512 network
steps (10 s of audio per call; longer inputs are cut by the runtime, exactly).
An engine is specific to the GPU model and TensorRT version that built it.
Needs ``pip install 'splatcast[gpu]'`` and an NVIDIA GPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_STEPS = 512
OPT_STEPS = 2  # one 40 ms chunk at 25 fps


class TensorRTExportError(RuntimeError):
    """The engine could not be built (package, GPU or parser problem)."""


def _trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTExportError(
            "building a TensorRT engine needs the tensorrt package and an NVIDIA GPU: pip install 'splatcast[gpu]'"
        ) from exc
    return trt


def build_engine(
    onnx_path: Path,
    output: Path,
    max_batch: int = 64,
    opt_batch: int | None = None,
    fp16: bool = True,
    max_steps: int = MAX_STEPS,
) -> Path:
    """Parse ``onnx_path``, build an engine for batch ``1..max_batch`` and write it to ``output``."""
    if max_batch < 1:
        raise TensorRTExportError("max_batch must be >= 1")
    trt = _trt()
    from engines.a2v.runtime import onnx_metadata

    meta = onnx_metadata(onnx_path)
    n_in, ch, length = int(meta["n_in"]), int(meta["state_channels"]), int(meta["state_len"])
    t0 = time.perf_counter()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if fp16:
        if not builder.platform_has_fast_fp16:
            logger.warning("export tensorrt: this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    opt_b = opt_batch or min(max_batch, 16)
    profile = builder.create_optimization_profile()
    profile.set_shape("feats", (1, 1, n_in), (opt_b, OPT_STEPS, n_in), (max_batch, max_steps, n_in))
    profile.set_shape("state", (1, length, ch), (opt_b, length, ch), (max_batch, length, ch))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTExportError("TensorRT failed to build the engine (see the TensorRT log above)")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(bytes(serialized))
    logger.info(
        "export tensorrt: %s → %s (fp16=%s, batch ≤ %d, steps ≤ %d) in %.1f s",
        onnx_path.name,
        output,
        fp16,
        max_batch,
        max_steps,
        time.perf_counter() - t0,
    )
    return output

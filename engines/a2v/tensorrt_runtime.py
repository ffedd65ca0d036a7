"""Run the a2v TensorRT engine (built by ``splatcast export tensorrt``) with the tensorrt Python API.

Device memory and copies go through ``cuda-python`` (``cuda.bindings.runtime``).
Both packages are optional (``pip install 'splatcast[gpu]'``) and imported only
when this backend is created. Inputs longer than the engine's optimisation
profile are cut into pieces along time (exact: the streaming state carries
over) and along batch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ENGINE_SUFFIX = ".plan"


class TensorRTUnavailable(RuntimeError):
    """TensorRT, cuda-python or a GPU is missing, or no engine was built."""


def _imports() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "the tensorrt package is not installed (pip install 'splatcast[gpu]' on a machine with an NVIDIA GPU)"
        ) from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise TensorRTUnavailable("cuda-python is not installed: pip install 'splatcast[gpu]'") from exc
    return trt, cudart


def default_engine_path(weights: Path) -> Path:
    """Where ``splatcast export tensorrt`` puts an engine by default: the cache, keyed by weights name."""
    cache = Path(os.environ.get("SPLATCAST_CACHE", Path.home() / ".cache" / "splatcast"))
    return cache / f"{weights.stem}{ENGINE_SUFFIX}"


def _check(result: Any) -> Any:
    """cuda-python calls return (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TensorRTUnavailable(f"CUDA error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class TensorRTBackend:
    """A deserialised engine, one execution context and device buffers sized for the profile's maximum."""

    name = "tensorrt"

    def __init__(self, weights: Path, engine: Path | None = None) -> None:
        trt, cudart = _imports()
        self._trt, self._cudart = trt, cudart
        count = _check(cudart.cudaGetDeviceCount())
        if not count:
            raise TensorRTUnavailable("no CUDA GPU is visible")
        path = engine or default_engine_path(weights)
        if not path.exists():
            raise TensorRTUnavailable(
                f"no TensorRT engine at {path}; build one with: splatcast export tensorrt -o {path}"
            )
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise TensorRTUnavailable(
                f"TensorRT could not load {path} (built by another TensorRT version or GPU?)"
            )
        self.context = self.engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate())
        lo, _opt, hi = self.engine.get_tensor_profile_shape("feats", 0)
        self.max_batch, self.max_steps = int(hi[0]), int(hi[1])
        _, _, state_hi = self.engine.get_tensor_profile_shape("state", 0)
        self.n_in = int(hi[2])
        self.state_shape = (int(state_hi[1]), int(state_hi[2]))
        self.n_out = int(self.engine.get_tensor_shape("out")[2])
        b, t = self.max_batch, self.max_steps
        sizes = {
            "feats": b * t * self.n_in,
            "state": b * self.state_shape[0] * self.state_shape[1],
            "out": b * t * self.n_out,
            "new_state": b * self.state_shape[0] * self.state_shape[1],
        }
        self._buffers = {k: _check(cudart.cudaMalloc(n * 4)) for k, n in sizes.items()}
        for k, ptr in self._buffers.items():
            self.context.set_tensor_address(k, int(ptr))
        logger.info("TensorRTBackend: %s, batch ≤ %d, steps ≤ %d (min %s)", path.name, b, t, tuple(lo))

    def __del__(self) -> None:  # free device memory when the backend goes away
        cudart = getattr(self, "_cudart", None)
        for ptr in getattr(self, "_buffers", {}).values():
            if cudart is not None:
                cudart.cudaFree(ptr)

    def _run_piece(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart = self._cudart
        b, t, _ = feats.shape
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.context.set_input_shape("feats", (b, t, self.n_in))
        self.context.set_input_shape("state", (b, *self.state_shape))
        feats = np.ascontiguousarray(feats, np.float32)
        state = np.ascontiguousarray(state, np.float32)
        out = np.empty((b, t, self.n_out), np.float32)
        new_state = np.empty_like(state)
        _check(
            cudart.cudaMemcpyAsync(self._buffers["feats"], feats.ctypes.data, feats.nbytes, h2d, self._stream)
        )
        _check(
            cudart.cudaMemcpyAsync(self._buffers["state"], state.ctypes.data, state.nbytes, h2d, self._stream)
        )
        if not self.context.execute_async_v3(int(self._stream)):
            raise TensorRTUnavailable("TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers["out"], out.nbytes, d2h, self._stream))
        _check(
            cudart.cudaMemcpyAsync(
                new_state.ctypes.data, self._buffers["new_state"], new_state.nbytes, d2h, self._stream
            )
        )
        _check(cudart.cudaStreamSynchronize(self._stream))
        return out, new_state

    def run(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``feats [B, T, n_in]``, ``state [B, len, ch]`` → ``(out [B, T, C], new_state)`` in profile-sized pieces."""
        outs, states = [], []
        for b0 in range(0, feats.shape[0], self.max_batch):
            f, s = feats[b0 : b0 + self.max_batch], state[b0 : b0 + self.max_batch]
            pieces = []
            for t0 in range(0, f.shape[1], self.max_steps):
                o, s = self._run_piece(f[:, t0 : t0 + self.max_steps], s)
                pieces.append(o)
            outs.append(np.concatenate(pieces, axis=1))
            states.append(s)
        return np.concatenate(outs, axis=0), np.concatenate(states, axis=0)

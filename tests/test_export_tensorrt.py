"""ONNX → TensorRT engine, compared with onnxruntime (FP16 tolerances). Skips without tensorrt and a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engines.a2v.runtime import OrtBackend, load_a2v

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _gpu() -> bool:
    if not HAS_TRT:
        return False
    try:
        from engines.a2v.tensorrt_runtime import _check, _imports

        _, cudart = _imports()
        return bool(_check(cudart.cudaGetDeviceCount()))
    except Exception:
        return False


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown when tensorrt is missing")
def test_missing_tensorrt_is_actionable(tmp_path: Path) -> None:
    from engines.assets import a2v_weights
    from export.tensorrt import TensorRTExportError, build_engine

    with pytest.raises(TensorRTExportError, match=r"pip install 'splatcast\[gpu\]'"):
        build_engine(a2v_weights(), tmp_path / "a2v.plan")


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason="needs tensorrt, cuda-python and an NVIDIA GPU")
@pytest.mark.parametrize("batch", [1, 64])
def test_tensorrt_matches_onnxruntime(tmp_path: Path, batch: int) -> None:
    from engines.assets import a2v_weights
    from export.tensorrt import build_engine

    onnx_path = a2v_weights()
    engine = build_engine(onnx_path, tmp_path / "a2v.plan", max_batch=64)
    trt_model = load_a2v("tensorrt", weights=onnx_path, engine=engine, strict=True)
    assert trt_model.runtime == "tensorrt"
    rng = np.random.default_rng(batch)
    feats = (rng.standard_normal((batch, 50, trt_model.n_in)) * 3 - 8).astype(np.float32)
    state = trt_model.zero_state(batch)
    ref, ref_state = OrtBackend(onnx_path).run(feats, state)
    out, new_state = trt_model.backend.run(feats, state)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-2)  # FP16 engine
    np.testing.assert_allclose(new_state, ref_state, rtol=5e-2, atol=5e-2)
    x = (rng.standard_normal(48_000) * 0.1).astype(np.float32)
    np.testing.assert_allclose(trt_model.infer(x, 48_000), load_a2v("onnx-cpu").infer(x, 48_000), atol=2e-2)

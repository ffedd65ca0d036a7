"""torch → ONNX export of the streaming a2v graph, checked against torch with explicit tolerances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.a2v.model import A2VConfig, A2VNet  # noqa: E402
from engines.a2v.runtime import OrtBackend, load_a2v, onnx_metadata  # noqa: E402
from engines.a2v.visemes import A2V_CHANNELS  # noqa: E402
from export.onnx import export_checkpoint, export_onnx  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def small_net() -> A2VNet:
    torch.manual_seed(0)
    net = A2VNet(A2VConfig(channels=32, dilations=(1, 2, 4)))
    for m in net.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.feat_mean.uniform_(-10, -5)
    net.feat_std.uniform_(1, 3)
    return net.eval()


@pytest.fixture(scope="module")
def onnx_file(small_net: A2VNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(small_net, tmp_path_factory.mktemp("onnx") / "a2v.onnx")


@pytest.mark.parametrize(("batch", "steps"), [(1, 1), (1, 37), (5, 8), (64, 2)])
def test_onnx_matches_torch(small_net: A2VNet, onnx_file: Path, batch: int, steps: int) -> None:
    rng = np.random.default_rng(batch * 100 + steps)
    feats = (rng.standard_normal((batch, steps, small_net.config.n_in)) * 3 - 8).astype(np.float32)
    state = rng.standard_normal((batch, small_net.config.state_len, 32)).astype(np.float32)
    out, new_state = OrtBackend(onnx_file).run(feats, state)
    with torch.no_grad():
        ref, ref_state = small_net.forward_stream(torch.from_numpy(feats), torch.from_numpy(state))
    assert out.shape == (batch, steps, len(A2V_CHANNELS))
    np.testing.assert_allclose(out, ref.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(new_state, ref_state.numpy(), rtol=RTOL, atol=ATOL)


def test_chunked_onnx_equals_whole_torch(small_net: A2VNet, onnx_file: Path) -> None:
    rng = np.random.default_rng(7)
    feats = (rng.standard_normal((2, 60, small_net.config.n_in)) - 8).astype(np.float32)
    backend = OrtBackend(onnx_file)
    state = np.zeros((2, small_net.config.state_len, 32), np.float32)
    parts = []
    for a, b in [(0, 1), (1, 9), (9, 10), (10, 41), (41, 60)]:
        out, state = backend.run(feats[:, a:b], state)
        parts.append(out)
    with torch.no_grad():
        ref = A2VNet.activate(small_net(torch.from_numpy(feats))).numpy()
    np.testing.assert_allclose(np.concatenate(parts, axis=1), ref, rtol=RTOL, atol=ATOL)


def test_metadata_and_runtime_loading(small_net: A2VNet, onnx_file: Path) -> None:
    meta = onnx_metadata(onnx_file)
    assert meta["lookahead_ms"] == "80" and meta["delay_steps"] == "4"
    assert int(meta["state_len"]) == small_net.config.state_len == 2 * (1 + 2 + 4)
    a2v = load_a2v("onnx-cpu", weights=onnx_file)
    assert a2v.channels == A2V_CHANNELS and a2v.state_channels == 32


def test_checkpoint_round_trip(small_net: A2VNet, tmp_path: Path) -> None:
    ckpt = tmp_path / "a2v.pt"
    torch.save(
        {"config": small_net.config.to_dict(), "state_dict": small_net.state_dict(), "meta": {"x": 1}}, ckpt
    )
    path = export_checkpoint(ckpt, tmp_path / "b.onnx")
    rng = np.random.default_rng(3)
    feats = (rng.standard_normal((1, 12, small_net.config.n_in)) - 8).astype(np.float32)
    state = np.zeros((1, small_net.config.state_len, 32), np.float32)
    out, _ = OrtBackend(path).run(feats, state)
    with torch.no_grad():
        ref, _ = small_net.forward_stream(torch.from_numpy(feats), torch.from_numpy(state))
    np.testing.assert_allclose(out, ref.numpy(), rtol=RTOL, atol=ATOL)
    assert '"x": 1' in onnx_metadata(path)["training"]


def test_shipped_weights_fit_the_budget() -> None:
    from engines.assets import a2v_weights

    path = a2v_weights()
    assert path.stat().st_size < 2.5 * 1024 * 1024
    meta = onnx_metadata(path)
    assert int(meta["lookahead_ms"]) <= 120

"""The torch a2v network: streaming state equals whole-sequence, budgets (params, lookahead)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from engines.a2v.model import A2VConfig, A2VNet, LossWeights, a2v_loss, count_parameters  # noqa: E402
from engines.a2v.visemes import A2V_CHANNELS, JAW_OPEN_INDEX  # noqa: E402


def test_budgets() -> None:
    net = A2VNet()
    assert count_parameters(net) <= 1_000_000
    assert net.config.lookahead_ms <= 120
    assert net.config.n_out == len(A2V_CHANNELS)


def test_streaming_state_equals_whole_sequence() -> None:
    torch.manual_seed(0)
    net = A2VNet(A2VConfig(channels=24, dilations=(1, 4, 2))).eval()
    x = torch.randn(3, 50, net.config.n_in)
    with torch.no_grad():
        whole = net(x)
        state = net.initial_state(3)
        parts = []
        for a, b in [(0, 3), (3, 4), (4, 30), (30, 50)]:
            y, state = net.logits_stream(x[:, a:b], state)
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)


def test_network_is_causal() -> None:
    torch.manual_seed(1)
    net = A2VNet(A2VConfig(channels=16, dilations=(1, 2))).eval()
    x = torch.randn(1, 20, net.config.n_in)
    y = x.clone()
    y[:, 12:] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(net(x)[:, :12], net(y)[:, :12])
        assert not torch.allclose(net(x)[:, 12:], net(y)[:, 12:])


def test_loss_is_lowest_at_the_labels() -> None:
    labels = torch.zeros(2, 10, len(A2V_CHANNELS))
    labels[..., 10] = 1.0  # viseme aa
    labels[..., JAW_OPEN_INDEX] = 0.7
    labels[..., -1] = 1.0
    good = torch.full_like(labels, -6.0)
    good[..., 10] = 8.0
    good[..., JAW_OPEN_INDEX] = torch.logit(torch.tensor(0.7))
    good[..., -1] = 8.0
    bad = torch.zeros_like(labels)
    lg, _ = a2v_loss(good, labels, LossWeights(), JAW_OPEN_INDEX)
    lb, _ = a2v_loss(bad, labels, LossWeights(), JAW_OPEN_INDEX)
    assert float(lg) < 0.1 * float(lb)

"""The a2v network in torch (training and export only; inference runs the ONNX file without torch).

A causal dilated temporal-convolution network over 50 Hz steps (two stacked
10 ms log-mel frames each). Every convolution only looks at the past, and the
output at step ``n`` is trained to predict the alignment-path labels of step
``n - delay``: the fixed delay *is* the lookahead (``delay`` × 20 ms, 80 ms by
default). Because nothing looks ahead inside the network, streaming needs no
recomputation: the only state is each dilated convolution's last ``2 × dilation``
inputs, carried explicitly (:meth:`A2VNet.forward_stream`), so chunked
inference equals whole-utterance inference.

Outputs per step: 15 viseme probabilities (softmax), the ARKit mouth/jaw
channels (sigmoid), speech activity (sigmoid) — :data:`engines.a2v.visemes.A2V_CHANNELS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from engines.a2v.features import N_MELS
from engines.a2v.visemes import A2V_CHANNELS, ARKIT_SLICE, N_VISEMES, SPEECH_INDEX

STEP_MS = 20  # one network step = two mel frames
MELS_PER_STEP = 2


@dataclass(frozen=True)
class A2VConfig:
    channels: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    kernel: int = 3
    delay: int = 4  # steps of lookahead (× 20 ms)
    dropout: float = 0.1
    n_in: int = N_MELS * MELS_PER_STEP
    n_out: int = len(A2V_CHANNELS)

    @property
    def lookahead_ms(self) -> int:
        return self.delay * STEP_MS

    @property
    def state_sizes(self) -> list[int]:
        return [(self.kernel - 1) * d for d in self.dilations]

    @property
    def state_len(self) -> int:
        return sum(self.state_sizes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d


class _Block(nn.Module):
    """Residual causal dilated convolution, written channel-last as one matrix product over its taps.

    ``Linear(k·C → C)`` on the ``k`` dilated taps is exactly a ``Conv1d(C, C, k, dilation)``; as a
    MatMul over ``batch × time`` rows it keeps the many-streams, few-steps case (the scheduler's
    batch of 40 ms chunks) one efficient GEMM in onnxruntime and TensorRT.
    """

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.kernel, self.dilation = kernel, dilation
        self.context = (kernel - 1) * dilation
        self.conv = nn.Linear(kernel * channels, channels)
        self.norm = nn.BatchNorm1d(channels)
        self.mix = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, C]``, ``state [B, context, C]`` (previous inputs) → (``y [B, T, C]``, new state)."""
        t = x.shape[1]
        full = torch.cat([state, x], dim=1)  # [B, context + T, C]
        taps = torch.cat(
            [full[:, i * self.dilation : i * self.dilation + t] for i in range(self.kernel)], dim=2
        )
        h = self.conv(taps)  # [B, T, C]
        h = self.norm(h.reshape(-1, h.shape[2])).reshape(h.shape)
        y = x + self.mix(self.drop(torch.relu(h)))
        return y, full[:, full.shape[1] - self.context :]


class A2VNet(nn.Module):
    """Causal TCN: ``feats [B, T, n_in]`` (50 Hz steps) → ``[B, T, n_out]`` (delayed by ``config.delay``)."""

    feat_mean: torch.Tensor  # [n_in] feature normalisation (buffers, exported as constants)
    feat_std: torch.Tensor

    def __init__(self, config: A2VConfig | None = None) -> None:
        super().__init__()
        self.config = config or A2VConfig()
        c = self.config
        self.register_buffer("feat_mean", torch.zeros(c.n_in))
        self.register_buffer("feat_std", torch.ones(c.n_in))
        self.inp = nn.Linear(c.n_in, c.channels)
        self.blocks = nn.ModuleList([_Block(c.channels, c.kernel, d, c.dropout) for d in c.dilations])
        self.head = nn.Linear(c.channels, c.n_out)

    def initial_state(self, batch: int) -> torch.Tensor:
        """Silence so far: ``[batch, state_len, channels]`` zeros."""
        return torch.zeros(batch, self.config.state_len, self.config.channels)

    def logits_stream(self, feats: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs ``[B, T, n_out]`` and the new state ``[B, state_len, channels]``."""
        h = self.inp((feats - self.feat_mean) / self.feat_std)
        new_states = []
        offset = 0
        for block, size in zip(self.blocks, self.config.state_sizes, strict=True):
            h, s = block(h, state[:, offset : offset + size])
            new_states.append(s)
            offset += size
        return self.head(h), torch.cat(new_states, dim=1)

    @staticmethod
    def activate(logits: torch.Tensor) -> torch.Tensor:
        """Logits → probabilities: softmax over visemes, sigmoid elsewhere."""
        vis = torch.softmax(logits[..., :N_VISEMES], dim=-1)
        rest = torch.sigmoid(logits[..., N_VISEMES:])
        return torch.cat([vis, rest], dim=-1)

    def forward_stream(self, feats: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the ONNX graph computes: ``(outputs [B, T, n_out], new_state)``."""
        logits, new_state = self.logits_stream(feats, state)
        return self.activate(logits), new_state

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Whole sequences from silence: logits ``[B, T, n_out]``."""
        logits, _ = self.logits_stream(feats, self.initial_state(feats.shape[0]).to(feats))
        return logits


class StreamingWrapper(nn.Module):
    """The exported module: explicit state in and out, activations included."""

    def __init__(self, net: A2VNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_stream(feats, state)


@dataclass
class LossWeights:
    viseme: float = 1.0
    arkit: float = 20.0
    jaw: float = 20.0
    speech: float = 0.5
    extra: dict[str, float] = field(default_factory=dict)


def a2v_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: LossWeights, jaw_index: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Soft cross-entropy on visemes, MSE on ARKit (extra on jawOpen), BCE on speech. Shapes ``[B, T, C]``."""
    vis_t = labels[..., :N_VISEMES]
    ce = -(vis_t * torch.log_softmax(logits[..., :N_VISEMES], dim=-1)).sum(-1).mean()
    ark = torch.sigmoid(logits[..., ARKIT_SLICE])
    mse = ((ark - labels[..., ARKIT_SLICE]) ** 2).mean()
    jaw = ((torch.sigmoid(logits[..., jaw_index]) - labels[..., jaw_index]) ** 2).mean()
    bce = nn.functional.binary_cross_entropy_with_logits(logits[..., SPEECH_INDEX], labels[..., SPEECH_INDEX])
    total = weights.viseme * ce + weights.arkit * mse + weights.jaw * jaw + weights.speech * bce
    parts = {"ce": ce.item(), "mse": mse.item(), "jaw": jaw.item(), "bce": bce.item()}
    return total, parts


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())

"""Export a trained a2v checkpoint (torch) to the streaming ONNX graph the runtimes load.

The graph takes ``feats [B, T, 80]`` (50 Hz steps of two stacked log-mel
frames) and ``state [B, state_len, channels]`` and returns
``out [B, T, 36]`` (probabilities, see ``A2V_CHANNELS``) and ``new_state``.
Batch and time are dynamic. Model facts the runtime needs (channel names,
lookahead, delay, state shape, feature setup) travel as ONNX metadata.

Command: ``splatcast export onnx --checkpoint build/a2v/a2v.pt -o engines/data/a2v.onnx``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_FEATS, INPUT_STATE = "feats", "state"
OUTPUT, OUTPUT_STATE = "out", "new_state"


class ExportError(RuntimeError):
    """Export failed or a required package is missing."""


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ExportError("ONNX export needs torch: pip install 'splatcast[train]'") from exc
    return torch


def load_checkpoint(path: Path) -> tuple[Any, dict[str, Any]]:
    """(A2VNet in eval mode, checkpoint metadata) from a ``.pt`` file written by training."""
    torch = _torch()
    from engines.a2v.model import A2VConfig, A2VNet

    if not path.exists():
        raise ExportError(f"checkpoint {path} not found; train one with: splatcast a2v train")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dict(ckpt["config"])
    cfg["dilations"] = tuple(cfg["dilations"])
    net = A2VNet(A2VConfig(**cfg))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net, dict(ckpt.get("meta", {}))


def model_metadata(net: Any, extra: dict[str, Any] | None = None) -> dict[str, str]:
    from engines.a2v import features
    from engines.a2v.model import MELS_PER_STEP, STEP_MS
    from engines.a2v.visemes import A2V_CHANNELS

    c = net.config
    meta = {
        "a2v_version": "1",
        "channels": json.dumps(list(A2V_CHANNELS)),
        "delay_steps": str(c.delay),
        "step_ms": str(STEP_MS),
        "lookahead_ms": str(c.lookahead_ms),
        "state_channels": str(c.channels),
        "state_len": str(c.state_len),
        "n_in": str(c.n_in),
        "mels_per_step": str(MELS_PER_STEP),
        "feature": json.dumps(
            {
                "sample_rate": features.SAMPLE_RATE,
                "hop": features.HOP,
                "win": features.WIN,
                "n_fft": features.N_FFT,
                "n_mels": features.N_MELS,
                "f_min": features.F_MIN,
                "f_max": features.F_MAX,
            }
        ),
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return meta


def export_onnx(net: Any, output: Path, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write the streaming graph of ``net`` (an ``A2VNet``) to ``output`` and check it loads."""
    torch = _torch()
    import onnx

    from engines.a2v.model import StreamingWrapper

    net = net.eval()
    wrapper = StreamingWrapper(net).eval()
    feats = torch.zeros(2, 3, net.config.n_in)
    state = net.initial_state(2)
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (feats, state),
            str(output),
            input_names=[INPUT_FEATS, INPUT_STATE],
            output_names=[OUTPUT, OUTPUT_STATE],
            dynamic_axes={
                INPUT_FEATS: {0: "batch", 1: "steps"},
                INPUT_STATE: {0: "batch"},
                OUTPUT: {0: "batch", 1: "steps"},
                OUTPUT_STATE: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(output))
    for k, v in model_metadata(net, extra_metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(output))
    logger.info("export: wrote %s (%.0f kB)", output, output.stat().st_size / 1024)
    return output


def export_checkpoint(checkpoint: Path, output: Path) -> Path:
    """``splatcast export onnx``: checkpoint → ONNX (metadata from the checkpoint carried over)."""
    net, meta = load_checkpoint(checkpoint)
    return export_onnx(net, output, {"training": meta} if meta else None)

"""Export Resemblyzer's speaker encoder (GE2E, Apache-2.0) to numpy weights that run without torch.

    python -m export.speaker_encoder [--wheel Resemblyzer-0.1.4-py3-none-any.whl] [-o engines/data/speaker_encoder.npz]

Resemblyzer ships its trained weights (``pretrained.pt``, a 3-layer LSTM over
40-channel mel frames, 256-d embeddings) inside its wheel. This reads them
with torch (the ``train`` extra; export only), and writes the LSTM and linear
weights as float16 into one ``.npz`` (about 2.8 MB) that
:mod:`engines.speaker` runs with numpy. Without ``--wheel`` the wheel is
fetched with ``pip download resemblyzer==0.1.4 --no-deps`` (PyPI, once).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "resemblyzer==0.1.4"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "engines" / "data" / "speaker_encoder.npz"


def fetch_wheel(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(folder)],
        check=True,
    )
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL} gave no wheel")
    return wheels[0]


def export(wheel: Path, out: Path) -> Path:
    try:
        import torch
    except ImportError as exc:
        raise SystemExit("exporting needs torch: pip install 'splatcast[train]'") from exc
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract("resemblyzer/pretrained.pt", tmp)
        checkpoint = torch.load(
            Path(tmp) / "resemblyzer" / "pretrained.pt", map_location="cpu", weights_only=True
        )
    state = checkpoint["model_state"]
    arrays = {
        k.replace(".", "_"): v.numpy().astype(np.float16)
        for k, v in state.items()
        if k.startswith(("lstm", "linear"))
    }
    expected = {
        f"lstm_{w}_l{layer}" for layer in range(3) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }
    missing = expected - set(arrays)
    if missing:
        raise ValueError(f"{wheel.name}: unexpected checkpoint, missing {sorted(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, source=np.array(f"{wheel.name} (Resemblyzer, Apache-2.0)"), **arrays)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", type=Path, default=None)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        path = export(wheel, args.output)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

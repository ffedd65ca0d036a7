"""Release a trained a2v network: train, export the streaming ONNX graph, evaluate it, write its card.

``splatcast a2v train [--install]`` runs :func:`release`: the training itself
is :func:`engines.a2v.train.train` (it writes the torch checkpoint); the ONNX
export (:mod:`export.onnx`) is evaluated on the held-out split through the
real runtime (:mod:`engines.a2v.evaluate`) and the figures go in the model
card. :func:`install` copies the ONNX file and its card into ``engines/data``
(the shipped weights).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engines.a2v.train import TrainConfig, train
from export.onnx import export_onnx

logger = logging.getLogger(__name__)


def release(data: Path, out: Path, config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train, export and evaluate; returns the model card (also written to ``out/a2v.card.json``)."""
    import torch

    from engines.a2v.evaluate import evaluate_corpus
    from engines.a2v.model import count_parameters
    from engines.a2v.runtime import load_a2v

    t_start = time.perf_counter()
    result = train(data, out, config, progress=progress)
    net, meta, corpus_meta = result.net, result.meta, result.corpus_meta
    cfg = net.config
    onnx_path = export_onnx(net, out / "a2v.onnx", {"training": meta})
    card: dict[str, Any] = {
        "model": "a2v causal dilated TCN (log-mel → visemes + ARKit mouth/jaw + speech)",
        "parameters": count_parameters(net),
        "onnx_bytes": onnx_path.stat().st_size,
        "architecture": cfg.to_dict(),
        "lookahead_ms": cfg.lookahead_ms,
        "lookahead_note": "delay steps × 20 ms past the end of the video frame at 25 fps; up to +13 ms at 30 fps",
        "train_config": asdict(config),
        "training": meta,
        "corpus": {k: corpus_meta[k] for k in ("config", "train", "test", "test_sentences", "train_sentences",
                                                "augmentation", "voice")},
        "validation_history": result.history,
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
        "rebuild": "splatcast a2v data && splatcast a2v train --install",
    }  # fmt: skip
    card["eval"] = evaluate_corpus(load_a2v("onnx-cpu", weights=onnx_path), data, progress=progress)
    (out / "a2v.card.json").write_text(json.dumps(card, indent=2))
    logger.info("a2v release: done in %.1f min → %s", (time.perf_counter() - t_start) / 60, out)
    return card


def install(out: Path) -> tuple[Path, Path]:
    """Copy ``out/a2v.onnx`` and its card into ``engines/data`` (the shipped weights)."""
    import shutil

    from engines.assets import DATA_DIR

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    onnx_dst, card_dst = DATA_DIR / "a2v.onnx", DATA_DIR / "a2v.card.json"
    shutil.copyfile(out / "a2v.onnx", onnx_dst)
    shutil.copyfile(out / "a2v.card.json", card_dst)
    logger.info("a2v release: installed %s and %s", onnx_dst, card_dst)
    return onnx_dst, card_dst

"""Train the a2v network on CPU within a time budget; write the checkpoint.

``splatcast a2v train`` (after ``splatcast a2v data``) runs :func:`train`
through :func:`export.a2v_release.release` (which also exports ONNX and writes the card):
random 4-second windows of the training stream (utterances back to back),
AdamW with warm-up and cosine decay over an iteration count fixed after
timing the first iterations against ``--minutes``, deterministic by seed.
Nothing here imports ``export/`` (it sits above ``engines/``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.a2v.data import LABEL_FPS, SplitArrays, load_split
from engines.a2v.features import LOG_FLOOR, N_MELS
from engines.a2v.visemes import JAW_OPEN_INDEX, N_VISEMES, SPEECH_INDEX

logger = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Training could not start (missing torch or corpus)."""


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 25.0
    seed: int = 0
    batch: int = 16
    window: int = 200  # steps (4 s)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    threads: int = 1  # the CPU is shared: one thread avoids OpenMP stalls when oversubscribed
    eval_every: int = 400


def _stack(feats: np.ndarray) -> np.ndarray:
    """``[2S, N_MELS]`` (100 Hz) → ``[S, 2 * N_MELS]`` (50 Hz steps)."""
    return feats.reshape(-1, 2 * feats.shape[1])


def _validate(net: Any, split: SplitArrays, delay: int, max_utts: int = 400) -> dict[str, float]:
    """Quick 50 Hz metrics on the held-out features (the real eval runs the ONNX runtime)."""
    import torch

    from engines.a2v.model import A2VNet

    net.eval()
    accs, jaw_p, jaw_t, closed, n_sil = [], [], [], 0, 0
    with torch.no_grad():
        for u in range(min(len(split.sentence_ids), max_utts)):
            f = _stack(split.feats[split.feat_offsets[u] : split.feat_offsets[u + 1]].astype(np.float32))
            lab = split.labels[split.label_offsets[u] : split.label_offsets[u + 1]].astype(np.float32)
            pad = np.full((delay, f.shape[1]), np.log(LOG_FLOOR), np.float32)  # features of silence
            x = torch.from_numpy(np.concatenate([f, pad]))[None]
            y = A2VNet.activate(net(x))[0, delay:].numpy()
            accs.append(np.mean(y[:, :N_VISEMES].argmax(1) == lab[:, :N_VISEMES].argmax(1)))
            jaw_p.append(y[:, JAW_OPEN_INDEX])
            jaw_t.append(lab[:, JAW_OPEN_INDEX])
            sil = lab[:, SPEECH_INDEX] == 0
            closed += int(np.sum(y[sil, JAW_OPEN_INDEX] < 0.1))
            n_sil += int(sil.sum())
    net.train()
    jp, jt = np.concatenate(jaw_p), np.concatenate(jaw_t)
    return {
        "viseme_acc_50hz": float(np.mean(accs)),
        "jaw_corr_50hz": float(np.corrcoef(jp, jt)[0, 1]),
        "closed_in_silence_50hz": closed / max(n_sil, 1),
    }


@dataclass
class TrainResult:
    """What a training run made: the network (eval mode), its checkpoint and what the card reports."""

    net: Any  # engines.a2v.model.A2VNet
    checkpoint: Path  # out/a2v.pt
    meta: dict[str, Any]  # seed, iterations, train seconds, hours of samples seen
    history: list[dict[str, Any]]  # validation figures along the way
    corpus_meta: dict[str, Any]  # the corpus' meta.json
    seconds: float  # from the start of train() to the checkpoint


def train(data: Path, out: Path, config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train within ``config.minutes`` and write ``out/a2v.pt``."""
    try:
        import torch
    except ImportError as exc:
        raise TrainError("training needs torch: pip install 'splatcast[train]'") from exc
    from tqdm import tqdm

    from engines.a2v.model import A2VConfig, A2VNet, LossWeights, a2v_loss

    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train_split = load_split(data, "train")
    test_split = load_split(data, "test")
    corpus_meta = json.loads((data / "meta.json").read_text())
    feats = _stack(train_split.feats.astype(np.float32))  # [S, 80]
    labels = train_split.labels.astype(np.float32)  # [S, C]
    if len(feats) != len(labels):
        raise TrainError(
            f"corpus features ({len(feats)} steps) and labels ({len(labels)}) disagree; rebuild it"
        )
    net = A2VNet(A2VConfig())
    net.feat_mean.copy_(torch.from_numpy(feats.mean(0)))
    net.feat_std.copy_(torch.from_numpy(feats.std(0) + 1e-3))
    cfg = net.config
    weights = LossWeights()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    feats_t, labels_t = torch.from_numpy(feats), torch.from_numpy(labels)
    n_steps = len(feats)
    budget = config.minutes * 60.0

    floor = float(np.log(LOG_FLOOR))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        starts = rng.integers(0, n_steps - config.window - 1, size=config.batch)
        idx = torch.from_numpy(starts[:, None] + np.arange(config.window)[None, :])
        x = feats_t[idx]  # [B, W, 2 * N_MELS]
        # on-the-fly feature augmentation: level (±11 dB, floor kept), spectral tilt, one masked mel band
        b = config.batch
        gain = torch.from_numpy(rng.uniform(-2.5, 2.5, size=(b, 1, 1)).astype(np.float32))
        tilt = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(b, 1, 1)).astype(np.float32))
        ramp = torch.linspace(-0.5, 0.5, N_MELS).repeat(2)[None, None, :]
        x = torch.clamp(x + gain + tilt * ramp, min=floor)
        lo = rng.integers(0, N_MELS, size=b)
        width = rng.integers(0, 6, size=b)
        for i in range(b):
            if width[i]:
                for off in (0, N_MELS):
                    x[i, :, off + lo[i] : off + lo[i] + width[i]] = x[i, :, off : off + N_MELS].mean()
        return x, labels_t[idx]

    def step(it: int, progress: float) -> dict[str, float]:
        warm = min(1.0, (it + 1) / config.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        for g in opt.param_groups:
            g["lr"] = config.lr * warm * (0.02 + 0.98 * cos)
        x, y = batch()
        logits = net(x)[:, cfg.delay :]
        loss, parts = a2v_loss(logits, y[:, : config.window - cfg.delay], weights, JAW_OPEN_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        parts["loss"] = loss.item()
        return parts

    # the schedule follows wall time (the CPU is shared, iteration speed varies): cosine decay over
    # the budget left after loading, minus a reserve for validation, export and the final evaluation
    reserve = 0.08 * budget
    t_loop = time.perf_counter()
    loop_budget = max(1.0, budget - reserve - (t_loop - t_start))
    history: list[dict[str, Any]] = []
    ema: dict[str, float] = {}
    it = 0
    bar = tqdm(total=round(loop_budget), desc="a2v train", unit="s", disable=not progress)
    while True:
        frac = (time.perf_counter() - t_loop) / loop_budget
        if frac >= 1.0:
            break
        parts = step(it, frac)
        for k, v in parts.items():
            ema[k] = 0.98 * ema.get(k, v) + 0.02 * v
        it += 1
        if it % 10 == 0:
            bar.n = min(round(loop_budget), round(time.perf_counter() - t_loop))
            bar.set_postfix(it=it, loss=f"{ema['loss']:.3f}", ce=f"{ema['ce']:.3f}", jaw=f"{ema['jaw']:.4f}")
        if it % config.eval_every == 0:
            val = _validate(net, test_split, cfg.delay, max_utts=120)
            history.append({"iteration": it, **{k: round(v, 4) for k, v in {**ema, **val}.items()}})
            logger.info("a2v train: it %d %s", it, history[-1])
    bar.close()
    total = it
    val = _validate(net, test_split, cfg.delay, max_utts=10**9)
    history.append({"iteration": it, **{k: round(v, 4) for k, v in {**ema, **val}.items()}})
    logger.info("a2v train: final (%d iterations) %s", it, history[-1])
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    train_seconds = time.perf_counter() - t_start
    meta = {
        "seed": config.seed,
        "iterations": total,
        "train_seconds": round(train_seconds, 1),
        "samples_seen_hours": round(total * config.batch * config.window / LABEL_FPS / 3600, 2),
    }
    torch.save({"config": cfg.to_dict(), "state_dict": net.state_dict(), "meta": meta}, out / "a2v.pt")
    return TrainResult(net, out / "a2v.pt", meta, history, corpus_meta, time.perf_counter() - t_start)

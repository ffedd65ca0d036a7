"""Viseme tables and the alignment path: phoneme alignments → per-video-frame a2v channels.

Three tables, one direction:

* espeak IPA phoneme (as Piper emits them, one character each) → one of the 15
  :data:`engines.arkit.VISEMES`;
* viseme → targets for the ARKit mouth/jaw channels in :data:`A2V_ARKIT_CHANNELS`;
* viseme → *dominance*: how strongly a segment holds its shape against its
  neighbours (lips must close for ``PP``; tongue consonants borrow the shape of
  the vowels around them).

The **alignment path** turns Piper's phoneme alignments into exactly the frames
the a2v network emits (same channels, same order, see :data:`A2V_CHANNELS`):

* viseme probabilities: the fraction of the frame's time spent in each viseme;
* ARKit channels: a coarticulated curve (Cohen–Massaro style dominance blend
  of segment targets, with exponential fall-off outside each segment),
  averaged over the frame;
* speech activity: the fraction of the frame that is not silence.

Video frame ``k`` covers media time ``[k/fps, (k+1)/fps)``. The blend looks
only inside the sentence that a time belongs to (each Piper chunk starts with
``^`` and ends with ``$``), so a frame is final as soon as the audio under it
has been aligned: zero lookahead, and chunk-by-chunk streaming
(:class:`AlignmentTrack`) equals whole-timeline output exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engines.arkit import ARKIT_BLENDSHAPES, VISEMES


class AlignmentError(ValueError):
    """Alignments or timing arguments are malformed."""


#: ARKit channels driven by a2v (a subset of :data:`engines.arkit.ARKIT_BLENDSHAPES`), in output order.
A2V_ARKIT_CHANNELS: tuple[str, ...] = (
    "jawOpen", "jawForward", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "tongueOut",
)  # fmt: skip
SPEECH_CHANNEL = "speech"
#: Every a2v output, in order: 15 viseme probabilities, ARKit mouth/jaw channels, speech activity.
A2V_CHANNELS: tuple[str, ...] = (*VISEMES, *A2V_ARKIT_CHANNELS, SPEECH_CHANNEL)
N_VISEMES = len(VISEMES)
N_ARKIT = len(A2V_ARKIT_CHANNELS)
VISEME_SLICE = slice(0, N_VISEMES)
ARKIT_SLICE = slice(N_VISEMES, N_VISEMES + N_ARKIT)
SPEECH_INDEX = N_VISEMES + N_ARKIT
JAW_OPEN_INDEX = N_VISEMES + A2V_ARKIT_CHANNELS.index("jawOpen")
SIL = VISEMES.index("sil")

assert all(name in ARKIT_BLENDSHAPES for name in A2V_ARKIT_CHANNELS)

# --- phoneme → viseme -------------------------------------------------------------------------

_VISEME_PHONEMES: dict[str, str] = {
    "PP": "pbmɓʙɸβ",
    "FF": "fvʋⱱɱ",
    "TH": "θð",
    "DD": "tdɾʈɖɗɽɺ",
    "kk": "kɡgŋxɣqɢɠɴχʁcɟ",
    "CH": "ʃʒçʝɕʑʂʐɧ",
    "SS": "sz",
    "nn": "nlɫɬɮɲɳɭʎʟ",
    "RR": "ɹrɚɝɻʀ",
    "aa": "aɑæʌɐɒɶ",
    "E": "eɛəɜɘɞɤ",
    "I": "iɪjɨᵻyʏɥ",
    "O": "oɔøœɵ",
    "U": "uʊwʉɯɰʍ",
}  # fmt: skip
PHONEME_TO_VISEME: dict[str, str] = {p: v for v, chars in _VISEME_PHONEMES.items() for p in chars}
#: Tokens that mark a pause: sentence start/end and punctuation.
SILENT_TOKENS = frozenset("^$.,!?;:-()\"'…—–_#")
#: Modifiers whose time belongs to the *next* phoneme (stress marks precede the syllable).
NEXT_MODIFIERS = frozenset("ˈˌ")
#: Modifiers whose time belongs to the *previous* phoneme (length, diacritics).
PREV_MODIFIERS = frozenset("ːˑ˞ʰʲˤ̧̪̯̩̃↓")
#: Phonemes with no mouth shape of their own: they take their neighbour's viseme.
TRANSPARENT = frozenset("hɦʔħʕ")

# --- viseme → ARKit targets and dominance --------------------------------------------------------

_TARGETS: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"jawOpen": 0.03, "mouthClose": 0.05, "mouthPressLeft": 0.45, "mouthPressRight": 0.45,
           "mouthRollLower": 0.25, "mouthRollUpper": 0.2},
    "FF": {"jawOpen": 0.1, "mouthRollLower": 0.55, "mouthUpperUpLeft": 0.25, "mouthUpperUpRight": 0.25,
           "mouthShrugUpper": 0.15},
    "TH": {"jawOpen": 0.18, "tongueOut": 0.35, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1},
    "DD": {"jawOpen": 0.2, "mouthStretchLeft": 0.15, "mouthStretchRight": 0.15,
           "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    "kk": {"jawOpen": 0.25, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1},
    "CH": {"jawOpen": 0.15, "mouthFunnel": 0.55, "mouthPucker": 0.25, "mouthShrugUpper": 0.25,
           "mouthUpperUpLeft": 0.15, "mouthUpperUpRight": 0.15},
    "SS": {"jawOpen": 0.08, "mouthStretchLeft": 0.35, "mouthStretchRight": 0.35,
           "mouthSmileLeft": 0.15, "mouthSmileRight": 0.15},
    "nn": {"jawOpen": 0.17, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1},
    "RR": {"jawOpen": 0.15, "mouthFunnel": 0.35, "mouthPucker": 0.3, "mouthShrugLower": 0.15},
    "aa": {"jawOpen": 0.7, "mouthLowerDownLeft": 0.35, "mouthLowerDownRight": 0.35,
           "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1, "jawForward": 0.05},
    "E": {"jawOpen": 0.42, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3,
          "mouthSmileLeft": 0.2, "mouthSmileRight": 0.2, "mouthLowerDownLeft": 0.15,
          "mouthLowerDownRight": 0.15},
    "I": {"jawOpen": 0.22, "mouthStretchLeft": 0.45, "mouthStretchRight": 0.45,
          "mouthSmileLeft": 0.35, "mouthSmileRight": 0.35},
    "O": {"jawOpen": 0.5, "mouthFunnel": 0.6, "mouthPucker": 0.3, "jawForward": 0.05},
    "U": {"jawOpen": 0.2, "mouthPucker": 0.8, "mouthFunnel": 0.4, "jawForward": 0.1},
}  # fmt: skip
#: How strongly each viseme holds its own shape (Cohen–Massaro dominance) ...
DOMINANCE: dict[str, float] = {
    "sil": 1.0, "PP": 6.0, "FF": 3.0, "TH": 1.2, "DD": 0.5, "kk": 0.5, "CH": 1.5, "SS": 1.0,
    "nn": 0.5, "RR": 1.0, "aa": 1.0, "E": 1.0, "I": 1.0, "O": 1.2, "U": 1.5,
}  # fmt: skip
#: ... and how far (time constant, seconds) its influence reaches outside its own interval:
#: lip closures are strong but brief, vowels reach further.
REACH_S: dict[str, float] = {
    "sil": 0.020, "PP": 0.015, "FF": 0.015, "TH": 0.020, "DD": 0.020, "kk": 0.020, "CH": 0.025,
    "SS": 0.020, "nn": 0.020, "RR": 0.025, "aa": 0.035, "E": 0.035, "I": 0.035, "O": 0.035, "U": 0.035,
}  # fmt: skip
#: Points per video frame at which the coarticulated curve is sampled and averaged.
SUBSAMPLES = 4

_TARGET_TABLE = np.zeros((N_VISEMES, N_ARKIT), dtype=np.float32)  # [15, 20], read-only constant
for _v, _targets in _TARGETS.items():
    for _name, _value in _targets.items():
        _TARGET_TABLE[VISEMES.index(_v), A2V_ARKIT_CHANNELS.index(_name)] = _value
_TARGET_TABLE.setflags(write=False)
_DOMINANCE_TABLE = np.array([DOMINANCE[v] for v in VISEMES], dtype=np.float64)  # [15]
_DOMINANCE_TABLE.setflags(write=False)
_REACH_TABLE = np.array([REACH_S[v] for v in VISEMES], dtype=np.float64)  # [15]
_REACH_TABLE.setflags(write=False)


def viseme_targets(viseme: str) -> dict[str, float]:
    """ARKit mouth/jaw targets of one viseme, every channel of :data:`A2V_ARKIT_CHANNELS` included."""
    if viseme not in VISEMES:
        raise AlignmentError(f"unknown viseme {viseme!r}; expected one of {VISEMES}")
    row = _TARGET_TABLE[VISEMES.index(viseme)]
    return {name: float(row[i]) for i, name in enumerate(A2V_ARKIT_CHANNELS)}


def viseme_target_table() -> np.ndarray:
    """All viseme targets as an array: ``[15 visemes, len(A2V_ARKIT_CHANNELS)]`` float32 (a copy)."""
    return _TARGET_TABLE.copy()


def phoneme_to_viseme(phoneme: str) -> str | None:
    """The viseme of one espeak IPA phoneme; ``sil`` for pauses, None for modifiers/transparent ones."""
    if phoneme in SILENT_TOKENS or phoneme == "":
        return "sil"
    return PHONEME_TO_VISEME.get(phoneme)


# --- alignments → segments ------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of one viseme inside a sentence, in samples from the sentence start."""

    start: int
    end: int
    viseme: int  # index into VISEMES


def _pairs(alignments: Iterable[object]) -> list[tuple[str, int]]:
    """Accept ``engines.tts.Alignment``, piper's ``PhonemeAlignment`` or ``(phoneme, num_samples)``."""
    out: list[tuple[str, int]] = []
    for a in alignments:
        if isinstance(a, tuple):
            phoneme, n = a
        else:
            phoneme, n = getattr(a, "phoneme", None), getattr(a, "num_samples", None)
        if not isinstance(phoneme, str) or n is None:
            raise AlignmentError(f"not a phoneme alignment: {a!r}")
        n = int(n)
        if n < 0:
            raise AlignmentError(f"negative duration in alignment {a!r}")
        out.append((phoneme, n))
    return out


_NEXT, _PREV, _SPACE, _TRANS = -1, -2, -3, -4


def alignments_to_segments(alignments: Iterable[object]) -> list[Segment]:
    """Resolve one sentence's alignments into contiguous viseme segments covering all its samples.

    Stress marks give their time to the next phoneme, length marks and
    diacritics to the previous one; a word space is split between its
    neighbours (or is silence next to a pause); ``h`` and glottal stops take
    the viseme of the next spoken phoneme. Unknown symbols are treated as
    transparent.
    """
    pairs = _pairs(alignments)
    labels: list[int] = []
    durations: list[int] = []
    for phoneme, n in pairs:
        if phoneme in NEXT_MODIFIERS:
            labels.append(_NEXT)
        elif phoneme in PREV_MODIFIERS:
            labels.append(_PREV)
        elif phoneme == " ":
            labels.append(_SPACE)
        elif phoneme in TRANSPARENT:
            labels.append(_TRANS)
        else:
            v = phoneme_to_viseme(phoneme)
            labels.append(_TRANS if v is None else VISEMES.index(v))
        durations.append(n)
    real = [i for i, lab in enumerate(labels) if lab >= 0 or lab == _TRANS]
    if not real:
        total = sum(durations)
        return [Segment(0, total, SIL)] if total > 0 else []

    def prev_real(i: int) -> int | None:
        cands = [j for j in real if j < i]
        return cands[-1] if cands else None

    def next_real(i: int) -> int | None:
        cands = [j for j in real if j > i]
        return cands[0] if cands else None

    # transparent phonemes take the next spoken viseme, else the previous one, else silence
    resolved = list(labels)
    for i in real:
        if labels[i] != _TRANS:
            continue
        choice = SIL
        for j in [k for k in real if k > i] + [k for k in reversed(real) if k < i]:
            if labels[j] >= 0 and labels[j] != SIL:
                choice = labels[j]
                break
            if labels[j] == SIL:
                break
        resolved[i] = choice
    # move modifier/space time onto real phonemes
    dur = dict.fromkeys(real, 0)
    for i in real:
        dur[i] = durations[i]
    for i, lab in enumerate(labels):
        if lab >= 0 or lab == _TRANS:
            continue
        p, q = prev_real(i), next_real(i)
        if lab == _NEXT:
            target = q if q is not None else p
            dur[target] += durations[i]  # type: ignore[index]
        elif lab == _PREV:
            target = p if p is not None else q
            dur[target] += durations[i]  # type: ignore[index]
        else:  # space
            if p is None or q is None:
                dur[p if p is not None else q] += durations[i]  # type: ignore[index]
            elif resolved[p] == SIL or resolved[q] == SIL:
                dur[p if resolved[p] == SIL else q] += durations[i]
            else:
                half = durations[i] // 2
                dur[p] += half
                dur[q] += durations[i] - half
    segments: list[Segment] = []
    pos = 0
    for i in real:
        n = dur[i]
        if n == 0:
            continue
        if segments and segments[-1].viseme == resolved[i]:
            last = segments.pop()
            segments.append(Segment(last.start, pos + n, last.viseme))
        else:
            segments.append(Segment(pos, pos + n, resolved[i]))
        pos += n
    return segments


# --- segments → frames ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sentence:
    start_s: float  # timeline position of the first sample
    end_s: float
    starts: np.ndarray  # [M] float64 seconds (absolute)
    ends: np.ndarray  # [M] float64 seconds
    visemes: np.ndarray  # [M] int64


def _sentence(segments: Sequence[Segment], start_s: float, sample_rate: int, num_samples: int) -> _Sentence:
    starts = np.array([start_s + s.start / sample_rate for s in segments], dtype=np.float64)
    ends = np.array([start_s + s.end / sample_rate for s in segments], dtype=np.float64)
    vis = np.array([s.viseme for s in segments], dtype=np.int64)
    return _Sentence(start_s, start_s + num_samples / sample_rate, starts, ends, vis)


def _arkit_at(sentence: _Sentence, times: np.ndarray) -> np.ndarray:
    """Coarticulated ARKit curve at ``times`` [P] (all inside the sentence) → [P, N_ARKIT] float64."""
    if len(sentence.visemes) == 0 or len(times) == 0:
        return np.zeros((len(times), N_ARKIT))
    t = times[:, None]
    dist = np.maximum(0.0, np.maximum(sentence.starts[None, :] - t, t - sentence.ends[None, :]))  # [P, M]
    weights = _DOMINANCE_TABLE[sentence.visemes][None, :] * np.exp(
        -dist / _REACH_TABLE[sentence.visemes][None, :]
    )
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ _TARGET_TABLE[sentence.visemes].astype(np.float64)


def _frames(sentences: Sequence[_Sentence], fps: int, first: int, count: int) -> np.ndarray:
    """Frames ``first .. first+count-1`` of the timeline made of ``sentences`` (silence elsewhere)."""
    out = np.zeros((count, len(A2V_CHANNELS)), dtype=np.float64)
    if count == 0:
        return out.astype(np.float32)
    ks = np.arange(first, first + count, dtype=np.float64)
    a, b = ks / fps, (ks + 1) / fps  # [count] frame intervals
    period = 1.0 / fps
    sub = a[:, None] + (np.arange(SUBSAMPLES)[None, :] + 0.5) * period / SUBSAMPLES  # [count, S]
    arkit = np.zeros((count, SUBSAMPLES, N_ARKIT))
    visemes = np.zeros((count, N_VISEMES))
    for s in sentences:
        if s.end_s <= a[0] or s.start_s >= b[-1]:
            continue
        # viseme time fractions (silence fills whatever no segment covers)
        overlap = np.clip(
            np.minimum(b[:, None], s.ends[None, :]) - np.maximum(a[:, None], s.starts[None, :]), 0, None
        )
        np.add.at(visemes.T, s.visemes, overlap.T)
        inside = (sub >= s.start_s) & (sub < s.end_s)
        if inside.any():
            arkit[inside] = _arkit_at(s, sub[inside])
    visemes /= period
    covered = visemes.sum(axis=1)
    visemes[:, SIL] += np.clip(1.0 - covered, 0.0, None)
    out[:, VISEME_SLICE] = visemes
    out[:, ARKIT_SLICE] = arkit.mean(axis=1)
    out[:, SPEECH_INDEX] = 1.0 - visemes[:, SIL]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _check_fps(fps: int) -> None:
    if not isinstance(fps, int) or not 1 <= fps <= 100:
        raise AlignmentError(f"fps must be an integer in 1..100, got {fps!r}")


class AlignmentTrack:
    """Streaming alignment path: push sentences (audio length + alignments) as they arrive, get frames.

    The timeline starts at media time 0; each :meth:`push` appends one sentence
    right after the previous audio, :meth:`push_silence` appends audio without
    alignments (silence, mouth closed). Every call returns the frames whose
    interval ``[k/fps, (k+1)/fps)`` is now fully covered; :meth:`flush` returns
    the last, partially covered frame. Concatenated outputs equal
    :func:`alignments_to_frames` on the whole timeline.
    """

    def __init__(self, fps: int = 25) -> None:
        _check_fps(fps)
        self.fps = fps
        self._sentences: list[_Sentence] = []
        self._end_s = 0.0  # timeline end so far
        self._emitted = 0  # frames returned so far

    @property
    def channels(self) -> tuple[str, ...]:
        return A2V_CHANNELS

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def push(
        self, alignments: Iterable[object], sample_rate: int, num_samples: int | None = None
    ) -> np.ndarray:
        """Append one sentence; ``num_samples`` (default: the alignments' sum) must equal that sum."""
        if sample_rate <= 0:
            raise AlignmentError(f"sample_rate must be positive, got {sample_rate}")
        segments = alignments_to_segments(alignments)
        total = segments[-1].end if segments else 0
        if num_samples is not None and num_samples != total:
            raise AlignmentError(f"alignments cover {total} samples but the chunk has {num_samples}")
        if total > 0:
            self._sentences.append(_sentence(segments, self._end_s, sample_rate, total))
            self._end_s += total / sample_rate
        return self._ready(final=False)

    def push_silence(self, num_samples: int, sample_rate: int) -> np.ndarray:
        """Append audio that has no alignments (treated as silence)."""
        if sample_rate <= 0 or num_samples < 0:
            raise AlignmentError("push_silence needs num_samples >= 0 and sample_rate > 0")
        self._end_s += num_samples / sample_rate
        return self._ready(final=False)

    def flush(self) -> np.ndarray:
        """Frames up to the end of the timeline, the last partial one included."""
        return self._ready(final=True)

    def reset(self) -> None:
        """Forget everything (e.g. on interrupt); the next push starts at media time 0 again."""
        self._sentences.clear()
        self._end_s = 0.0
        self._emitted = 0

    def _ready(self, final: bool) -> np.ndarray:
        # tiny epsilon so float rounding of sample/rate sums never drops a frame that is complete
        x = self._end_s * self.fps + 1e-9
        total = math.ceil(x - 2e-9) if final else math.floor(x)
        count = max(0, total - self._emitted)
        frames = _frames(self._sentences, self.fps, self._emitted, count)
        self._emitted += count
        horizon = self._emitted / self.fps
        self._sentences = [s for s in self._sentences if s.end_s > horizon]
        return frames


def alignments_to_frames(
    alignments: Iterable[object], sample_rate: int, fps: int = 25, start_sample: int = 0
) -> np.ndarray:
    """One sentence placed at ``start_sample`` on the timeline → ``[T, len(A2V_CHANNELS)]`` float32.

    Returns the frames from the one containing ``start_sample`` to the one containing
    the sentence's last sample (silence outside the sentence).
    """
    _check_fps(fps)
    if start_sample < 0:
        raise AlignmentError("start_sample must be >= 0")
    track = AlignmentTrack(fps)
    first = math.floor(start_sample / sample_rate * fps + 1e-9)
    out = [track.push_silence(start_sample, sample_rate), track.push(alignments, sample_rate), track.flush()]
    return np.concatenate(out, axis=0)[first:]


def chunks_to_frames(
    chunks: Iterable[tuple[Iterable[object], int]], sample_rate: int, fps: int = 25
) -> np.ndarray:
    """Several sentences back to back (each ``(alignments, gap_samples_after)``) → frames of the whole timeline."""
    track = AlignmentTrack(fps)
    out = []
    for alignments, gap in chunks:
        out.append(track.push(alignments, sample_rate))
        out.append(track.push_silence(gap, sample_rate))
    out.append(track.flush())
    return np.concatenate(out, axis=0)

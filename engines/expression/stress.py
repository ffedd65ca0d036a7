"""Emphasis from Piper's stress marks on the alignment path.

espeak (Piper's phonemiser) writes ``ˈ`` before the syllable that carries a
word's primary stress and ``ˌ`` before a secondary one; function words ("the",
"of", "is") usually get neither. The stressed syllable's vowel is where a
speaker's pitch accent and a listener-visible beat (brow flash, small nod)
land, so :func:`stressed_syllables` finds, for every primary (and secondary)
mark, the onset of the first vowel after it, in samples from the chunk's start.

Not every stressed syllable is emphasised: a nod on each content word looks
like a woodpecker. :func:`emphasis_events` picks, per phrase (the stretch
between pauses), the **nuclear accent**, by default the last primary stress
(where English puts the main accent of a neutral phrase), with strength 1;
the other primary stresses get ``SECONDARY_STRENGTH``; secondary stresses
none. When the chunk's audio was analysed (:mod:`engines.expression.prosody`),
the syllable whose vowel is most prominent (pitch above the register ×
loudness) is the nucleus instead, and each strength is scaled by its vowel's
prominence, so the voice's own emphasis decides. Events closer than
``REFRACTORY_S`` keep the stronger one. Each event sits on the video frame
holding its vowel's onset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engines.a2v.visemes import SILENT_TOKENS, _pairs, phoneme_to_viseme
from engines.expression.prosody import ProsodyFrame

PRIMARY, SECONDARY = "ˈ", "ˌ"
VOWEL_VISEMES = frozenset({"aa", "E", "I", "O", "U"})
SECONDARY_STRENGTH = 0.45
REFRACTORY_S = 0.3
MIN_STRENGTH = 0.2  # weaker events (after prosody scaling) are dropped


@dataclass(frozen=True)
class StressedSyllable:
    """A stressed syllable: where its vowel starts, in samples from the chunk's start."""

    sample: int
    primary: bool
    word: int  # word index within the chunk
    phrase: int  # phrase index within the chunk (phrases are separated by punctuation/pauses)


@dataclass(frozen=True)
class EmphasisEvent:
    """A beat of emphasis: which frame (utterance-relative) and how strong (0..1)."""

    frame: int
    strength: float
    sample: int  # the vowel onset it stands for, in samples from the chunk's start


def _is_vowel(phoneme: str) -> bool:
    return phoneme_to_viseme(phoneme) in VOWEL_VISEMES


def stressed_syllables(alignments: Iterable[object]) -> list[StressedSyllable]:
    """Every stress mark's syllable (the onset of the first vowel after it) in one chunk's alignments."""
    out: list[StressedSyllable] = []
    offset = 0
    pending: str | None = None
    word = phrase = 0
    for phoneme, n in _pairs(alignments):
        if phoneme in (PRIMARY, SECONDARY):
            pending = phoneme
        elif phoneme == " ":
            word += 1
        elif phoneme in SILENT_TOKENS:
            if phoneme not in "^":
                phrase += 1 if out and out[-1].phrase == phrase else 0
            pending = None
        elif pending is not None and _is_vowel(phoneme):
            out.append(StressedSyllable(offset, pending == PRIMARY, word, phrase))
            pending = None
        offset += n
    return out


def _prominence_at(frames: Sequence[ProsodyFrame], k: int) -> float:
    """The largest prominence over frames k .. k+2 (the vowel and what follows it)."""
    near = [f.prominence for f in frames if k <= f.index <= k + 2]
    return max(near) if near else 0.0


def emphasis_events(
    alignments: Iterable[object],
    sample_rate: int,
    fps: int,
    start_sample: int = 0,
    prosody: Sequence[ProsodyFrame] | None = None,
) -> list[EmphasisEvent]:
    """Emphasis beats of one chunk placed at ``start_sample`` of the utterance (see the module docstring).

    ``prosody``: the utterance's prosody frames (utterance-relative indices), when known.
    """
    if sample_rate <= 0 or fps <= 0:
        raise ValueError("sample_rate and fps must be positive")
    syllables = stressed_syllables(alignments)
    candidates: list[tuple[int, float, int]] = []  # (frame, strength, sample)
    for phrase in sorted({s.phrase for s in syllables}):
        primaries = [s for s in syllables if s.phrase == phrase and s.primary]
        if not primaries:
            continue
        frames = [int((start_sample + s.sample) * fps // sample_rate) for s in primaries]
        if prosody:
            prom = [_prominence_at(prosody, k) for k in frames]
            nucleus = max(range(len(primaries)), key=lambda i: (prom[i], i))
            top = max(prom)
            for i, (s, k) in enumerate(zip(primaries, frames, strict=True)):
                base = 1.0 if i == nucleus else SECONDARY_STRENGTH
                scale = 0.5 + 0.5 * (prom[i] / top) if top > 0 else 1.0
                candidates.append((k, base * scale, s.sample))
        else:
            for i, (s, k) in enumerate(zip(primaries, frames, strict=True)):
                candidates.append((k, 1.0 if i == len(primaries) - 1 else SECONDARY_STRENGTH, s.sample))
    refractory = max(1, round(REFRACTORY_S * fps))
    kept: list[tuple[int, float, int]] = []
    for cand in sorted(candidates):
        if cand[1] < MIN_STRENGTH:
            continue
        if kept and cand[0] - kept[-1][0] < refractory:
            if cand[1] > kept[-1][1]:
                kept[-1] = cand
            continue
        kept.append(cand)
    return [EmphasisEvent(k, float(s), sample) for k, s, sample in kept]

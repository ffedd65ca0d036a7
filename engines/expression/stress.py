"""Emphasis from Piper's stress marks on the alignment path.

espeak (Piper's phonemiser) writes ``ˈ`` before the syllable that carries a
word's primary stress and ``ˌ`` before a secondary one; function words ("the",
"of", "is") usually get neither. The stressed syllable's vowel is where a
speaker's pitch accent and a listener-visible beat (brow flash, small nod)
land, so :func:`stressed_syllables` finds, for every primary (and secondary)
mark that a vowel follows, where its syllable starts (the mark's own position:
espeak puts it before the syllable's onset consonants), in samples from the
chunk's start. A beat kicked there peaks about 100 ms later, on the vowel
(starting it at the vowel instead followed the pitch accents less well:
r 0.185 against 0.205 on 20 held-out Piper sentences, ``bench expression``'s
method).

Not every stressed syllable is emphasised: a nod on each content word looks
like a woodpecker. :func:`emphasis_events` picks, per phrase (the stretch
between pauses), the **nuclear accent**, by default the last primary stress
(where English puts the main accent of a neutral phrase), with strength 1;
the other primary stresses get ``SECONDARY_STRENGTH``; secondary stresses
none. When the chunk's audio was analysed (:mod:`engines.expression.prosody`),
the voice weighs in: every primary stress is a beat of ``BASE_STRENGTH`` plus
the rest in proportion to how prominent its syllable is (pitch over the
recent trough × loudness, full at ``FULL_PROMINENCE``). Events closer than
``REFRACTORY_S`` keep the stronger one. Each event sits on the video frame
holding its vowel's onset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engines.a2v.visemes import SILENT_TOKENS, _pairs, phoneme_to_viseme
from engines.expression.prosody import ProsodyFrame, analyse

PRIMARY, SECONDARY = "ˈ", "ˌ"
VOWEL_VISEMES = frozenset({"aa", "E", "I", "O", "U"})
SECONDARY_STRENGTH = 0.45
REFRACTORY_S = 0.3
MIN_STRENGTH = 0.2  # weaker events (after prosody scaling) are dropped
BASE_STRENGTH = 0.5  # with prosody: every primary stress beats at least this much ...
FULL_PROMINENCE = 1.5  # a stressed vowel this prominent (3 semitones over the trough, loud) is a full beat


@dataclass(frozen=True)
class StressedSyllable:
    """A stressed syllable: where it starts (its stress mark), in samples from the chunk's start."""

    sample: int
    primary: bool
    word: int  # word index within the chunk
    phrase: int  # phrase index within the chunk (phrases are separated by punctuation/pauses)


@dataclass(frozen=True)
class EmphasisEvent:
    """A beat of emphasis: which frame (utterance-relative) and how strong (0..1)."""

    frame: int
    strength: float
    sample: int  # the syllable onset it stands for, in samples from the chunk's start


def _is_vowel(phoneme: str) -> bool:
    return phoneme_to_viseme(phoneme) in VOWEL_VISEMES


def stressed_syllables(alignments: Iterable[object]) -> list[StressedSyllable]:
    """Every stress mark that a vowel follows (before a pause), at the mark's position, in one chunk."""
    out: list[StressedSyllable] = []
    offset = 0
    pending: str | None = None
    mark_at = 0
    word = phrase = 0
    for phoneme, n in _pairs(alignments):
        if phoneme in (PRIMARY, SECONDARY):
            pending = phoneme
            mark_at = offset
        elif phoneme == " ":
            word += 1
        elif phoneme in SILENT_TOKENS:
            if phoneme not in "^":
                phrase += 1 if out and out[-1].phrase == phrase else 0
            pending = None
        elif pending is not None and _is_vowel(phoneme):
            out.append(StressedSyllable(mark_at, pending == PRIMARY, word, phrase))
            pending = None
        offset += n
    return out


PROMINENCE_SPAN = 3  # frames after a syllable's onset whose prominence counts for it


def _prominence_at(frames: Sequence[ProsodyFrame], k: int) -> float:
    """The largest prominence over frames k .. k+3 (the syllable from its onset)."""
    if frames and frames[0].index == 0 and frames[-1].index == len(frames) - 1:  # a whole track: index it
        near = [f.prominence for f in frames[max(0, k) : k + PROMINENCE_SPAN + 1]]
    else:
        near = [f.prominence for f in frames if k <= f.index <= k + PROMINENCE_SPAN]
    return max(near) if near else 0.0


def beat_strength(frames: Sequence[ProsodyFrame], k: int) -> float:
    """A primary stress at frame k, weighed by the voice: ``BASE_STRENGTH`` .. 1."""
    prominence = min(1.0, _prominence_at(frames, k) / FULL_PROMINENCE)
    return BASE_STRENGTH + (1.0 - BASE_STRENGTH) * prominence


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
            for s, k in zip(primaries, frames, strict=True):
                candidates.append((k, beat_strength(prosody, k), s.sample))
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


ANALYSIS_FPS = 25  # the frame grid chunk_emphasis analyses on (its results are in samples)


@dataclass(frozen=True)
class ChunkEmphasis:
    """One aligned chunk's emphasis, worked out ahead (in the TTS's own thread): samples from its start."""

    beats: tuple[tuple[int, float], ...]  # (syllable onset sample, strength 0..1)
    pauses: tuple[int, ...]  # phrase ends (sample where the pause is sure)


def chunk_emphasis(pcm: np.ndarray, sample_rate: int, alignments: Iterable[object]) -> ChunkEmphasis:
    """Prosody of one chunk and its stress beats (see :func:`emphasis_events`), off the media loop.

    About 25 ms of CPU per second of speech; a TTS that synthesises in a worker thread calls it there, so
    the stream that plays the chunk only places the results on its frames.
    """
    frames = analyse(np.asarray(pcm, np.float32), sample_rate, ANALYSIS_FPS)
    events = emphasis_events(alignments, sample_rate, ANALYSIS_FPS, prosody=frames)
    spf = sample_rate / ANALYSIS_FPS
    return ChunkEmphasis(
        beats=tuple((e.sample, e.strength) for e in events),
        pauses=tuple(round(f.index * spf) for f in frames if f.phrase_end),
    )

"""Any Piper voice's phoneme set, mapped onto the symbols the viseme tables know.

Piper's alignments name each phoneme by its key in the voice's
``phoneme_id_map`` (its config JSON). For the bundled en_US voice those are
single espeak IPA characters, which :mod:`engines.a2v.visemes` maps directly.
Other voices bring other sets: vowel clusters (``"aɪ"`` as one symbol),
tone digits (Thai, Japanese, pinyin), letters (``phoneme_type: text``),
multi-letter pinyin finals, or IPA characters the table has no row for.

:class:`PhonemeTable` reads a voice's set once, when the voice is loaded,
and rewrites every alignment into symbols the viseme tables know, keeping
the sample counts exact (a cluster's samples are split between its parts,
and the parts always sum to the original). So the alignment path stays
exact for any Piper voice; symbols it cannot place (listed in
:attr:`PhonemeTable.unmapped`) borrow their neighbour's mouth shape.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from engines.a2v.visemes import (
    NEXT_MODIFIERS,
    PHONEME_TO_VISEME,
    PREV_MODIFIERS,
    SILENT_TOKENS,
    TRANSPARENT,
)

A = TypeVar(
    "A", bound=Any
)  # an alignment dataclass with ``phoneme`` and ``num_samples`` (engines.tts.Alignment)

# what a symbol the tables do not know is rewritten to
_TRANSPARENT = "h"  # takes the next spoken viseme (engines.a2v.visemes.TRANSPARENT)
_PREV = "ː"  # its time goes to the previous phoneme (tones, length)
_PIPER_SPECIAL = frozenset({"_", "^", "$", " ", "#"})  # pad, BOS, EOS, word gap, piper's sentence marks
# IPA symbols in Piper's espeak map that the viseme tables have no row for, and the known symbol whose
# mouth shape they share: clicks by place (bilabial, dental/alveolar, lateral), implosives like their
# plosives, epiglottals (no lip shape: transparent like h), the Greek epsilon some voices use for ɛ
EXTRA_IPA: dict[str, str] = {
    "ʘ": "p", "ǀ": "t", "ǃ": "t", "ǂ": "t", "ǁ": "l", "ʄ": "ɟ", "ʛ": "ɢ",
    "ʜ": "h", "ʢ": "h", "ʡ": "ʔ", "ε": "ɛ",
}  # fmt: skip
# a cluster's first part takes this share of its samples (a diphthong's nucleus is longer than its glide)
FIRST_PART_SHARE = 0.6


def _known(ch: str) -> bool:
    return (
        ch in PHONEME_TO_VISEME
        or ch in SILENT_TOKENS
        or ch in NEXT_MODIFIERS
        or ch in PREV_MODIFIERS
        or ch in TRANSPARENT
        or ch == " "
    )


def _base(ch: str) -> str:
    """A character without its combining marks (``ã`` → ``a``), lower-cased (``A`` → ``a``)."""
    decomposed = unicodedata.normalize("NFD", ch)
    return decomposed[0].lower() if decomposed else ch


def _spoken(ch: str) -> bool:
    return ch in PHONEME_TO_VISEME


def canonical_parts(symbol: str) -> tuple[str, ...] | None:
    """The known symbols one voice symbol becomes (``"aɪ"`` → ``("a", "ɪ")``), None when none fits.

    Single known characters stay themselves. Otherwise: combining marks are
    dropped, letters lower-cased, digits (tones) become a length mark (their
    time goes to the previous phoneme), and of a cluster the spoken parts are
    kept (at most two: nucleus and glide).
    """
    if symbol in _PIPER_SPECIAL or _known(symbol):
        return (symbol,)
    if symbol in EXTRA_IPA:
        return (EXTRA_IPA[symbol],)
    if symbol.isdigit():
        return (_PREV,)
    parts: list[str] = []
    for ch in symbol:
        if _spoken(ch):
            parts.append(ch)
            continue
        base = _base(ch)
        if _spoken(base):
            parts.append(base)
    if not parts:
        if all(_known(ch) for ch in symbol):  # e.g. a stress mark glued to punctuation
            return (symbol[0],)
        return None
    return tuple(parts[:1] + parts[-1:]) if len(parts) > 1 else (parts[0],)


@dataclass(frozen=True)
class PhonemeTable:
    """One voice's symbol → known-symbols rewrite (identity for symbols the viseme tables know)."""

    parts: Mapping[str, tuple[str, ...]]
    unmapped: tuple[str, ...]  # symbols of the voice that no rule places (rewritten as transparent)

    @classmethod
    def from_symbols(cls, symbols: Iterable[str]) -> PhonemeTable:
        parts: dict[str, tuple[str, ...]] = {}
        unmapped: list[str] = []
        for symbol in symbols:
            found = canonical_parts(symbol)
            if found is None:
                unmapped.append(symbol)
                found = (_TRANSPARENT,)
            if found != (symbol,):
                parts[symbol] = found
        return cls(parts=parts, unmapped=tuple(sorted(unmapped)))

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> PhonemeTable:
        """From a Piper voice config (the parsed ``.onnx.json``): its ``phoneme_id_map`` keys."""
        id_map = config.get("phoneme_id_map")
        if not isinstance(id_map, Mapping) or not id_map:
            raise ValueError("the voice config has no phoneme_id_map")
        return cls.from_symbols(str(k) for k in id_map)

    @property
    def identity(self) -> bool:
        """True when every symbol is already known (the bundled voice): nothing is rewritten."""
        return not self.parts

    def rewrite(self, alignments: Sequence[A]) -> tuple[A, ...]:
        """Alignments (frozen dataclasses such as :class:`engines.tts.Alignment`) in known symbols;
        the sample counts sum exactly to the input's."""
        if self.identity:
            return tuple(alignments)
        out: list[A] = []
        for a in alignments:
            parts = self.parts.get(a.phoneme)
            if parts is None:
                if canonical_parts(a.phoneme) is None:  # a symbol outside the voice's own map
                    out.append(replace(a, phoneme=_TRANSPARENT))
                else:
                    out.append(a)
                continue
            if len(parts) == 1:
                out.append(replace(a, phoneme=parts[0]))
                continue
            first = round(a.num_samples * FIRST_PART_SHARE)
            out.append(replace(a, phoneme=parts[0], num_samples=first))
            out.append(replace(a, phoneme=parts[1], num_samples=a.num_samples - first))
        return tuple(out)

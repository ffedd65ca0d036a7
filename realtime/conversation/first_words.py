"""LLM text → TTS: a reply's first words go to Piper before its first sentence is complete.

Pipecat's TTS services hold an LLM's streamed text until a sentence ends
(``SimpleTextAggregator``), so the avatar cannot start speaking before the LLM
has generated the whole first sentence: at a typical 20–40 tokens a second, a
15-word opening sentence costs 0.5–1 s of waiting before synthesis even
starts. Piper then cuts that sentence anyway: :meth:`engines.tts.PiperTTS.stream`
synthesises a reply's first piece (at most ``FIRST_MAX_WORDS`` words, cut
before a conjunction or at a clause mark, :func:`engines.tts.split_text`) on
its own.

:class:`FirstWordsAggregator` hands over exactly that first piece as soon as
its words (and the few after it that :func:`split_text` looks at to place the
cut) have arrived; the rest of the reply is aggregated sentence by
sentence as before. The pieces Piper speaks are the same as with whole
sentences; only the first one starts earlier. A reply whose first sentence is
shorter than the first piece is unchanged. The emotion of that first sentence
is read from the first piece (the rest of the sentence keeps it:
:meth:`FirstWordsAggregator.continues`, ``annotate(..., continues=True)``).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, BaseTextAggregator, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from engines.tts import FIRST_MAX_WORDS, split_text

_WORD = re.compile(r"\S+")


def _words(text: str) -> str:
    return " ".join(text.split())


def _futures() -> tuple[tuple[str, ...], ...]:
    """What may follow the words in so far, as far as split_text's first cut looks: a clause mark one or
    two words on (or none), and the sentence's end one to three words on (or further: six)."""
    out = []
    for end in (1, 2, 3, 6):
        for clause in (None, 1, 2):
            if clause is not None and clause >= end:
                continue
            words = ["x"] * end
            words[-1] = "x."
            if clause is not None:
                words[clause - 1] = "x,"
            out.append(tuple(words))
    return tuple(out)


_FUTURES = _futures()


def first_piece(buffered: str, first_max_words: int = FIRST_MAX_WORDS) -> tuple[str, str] | None:
    """(first piece, the text after it) once ``buffered`` settles where the first piece ends, else None.

    Only complete words count: the last one is complete when whitespace follows it. The piece is the
    one :func:`split_text` cuts from the whole sentence: it is final when no continuation of the
    words in so far (a sentence or clause end within the next few words, or none) would move it.
    """
    words = list(_WORD.finditer(buffered))
    if words and words[-1].end() == len(buffered):
        words.pop()  # still arriving
    if not words:
        return None
    complete = [w.group() for w in words]
    head = split_text(" ".join(complete), first_max_words=first_max_words)[0]
    n = len(head.split())
    if n >= len(complete):
        return None
    for future in _FUTURES:
        if split_text(" ".join([*complete, *future]), first_max_words=first_max_words)[0] != head:
            return None
    return head, buffered[words[n - 1].end() :]


class FirstWordsAggregator(BaseTextAggregator):
    """Sentence aggregation, except each reply's first piece leaves as soon as its words are in."""

    def __init__(self, first_max_words: int = FIRST_MAX_WORDS, language: str | None = None) -> None:
        super().__init__(aggregation_type=TextType.SENTENCE, language=language)
        self._first_max_words = first_max_words
        self._sentences = SimpleTextAggregator(aggregation_type=TextType.SENTENCE, language=language)
        self._first_out = False  # this reply's first piece (or first sentence) has been handed over
        self._received = ""  # the reply's text so far, as it came, until then
        self._after_cut = False  # the next aggregation is the rest of the sentence the first piece began
        self._continuations: deque[str] = deque()  # such rests handed over, not yet spoken

    @property
    def text(self) -> Aggregation:
        return self._sentences.text

    def set_language(self, language: str | None) -> None:
        super().set_language(language)
        self._sentences.set_language(language)

    def continues(self, text: str) -> bool:
        """Whether ``text`` (about to be spoken) is the rest of a sentence whose first words went out
        as a first piece; answers each such rest once, in order."""
        if self._continuations and self._continuations[0] == _words(text):
            self._continuations.popleft()
            return True
        return False

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if not self._first_out:
            self._received += text
        async for sentence in self._sentences.aggregate(text):
            self._start_sentences()
            yield self._note(sentence)
        if self._first_out:
            return
        cut = first_piece(self._received, self._first_max_words)
        if cut is None:
            return
        head, rest = cut
        self._start_sentences()
        self._continuations.clear()  # rests of earlier replies: spoken or dropped by now
        self._after_cut = True
        await self._sentences.reset()
        yield Aggregation(text=head, type=TextType.SENTENCE)
        async for sentence in self._sentences.aggregate(rest):
            yield self._note(sentence)

    def _note(self, aggregation: Aggregation) -> Aggregation:
        """Remember the first aggregation after a cut: it continues the sentence the cut began."""
        if self._after_cut:
            self._after_cut = False
            self._continuations.append(_words(aggregation.text))
        return aggregation

    def _start_sentences(self) -> None:
        self._first_out = True
        self._received = ""

    def _new_reply(self) -> None:
        self._first_out = False
        self._received = ""
        self._after_cut = False

    async def flush(self) -> Aggregation | None:
        """The end of a reply: what is left, and the next reply starts with a first piece again."""
        rest = await self._sentences.flush()
        if rest is not None:
            rest = self._note(rest)
        self._new_reply()
        return rest

    async def handle_interruption(self) -> None:
        self._new_reply()
        self._continuations.clear()
        await self._sentences.handle_interruption()

    async def reset(self) -> None:
        self._new_reply()
        await self._sentences.reset()

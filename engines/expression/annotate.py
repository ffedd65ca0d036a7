"""A text to speak → the text without tags and the emotion of each of its sentences, before it is spoken.

The TTS speaks the clean text piece by piece (:meth:`engines.tts.PiperTTS.stream`
says which words each chunk covers); the emotion of a sentence goes with the
chunk that starts it. A tag applies to the sentence in which the next word
after it stands (a model that puts its tag at the end of the previous
sentence still tags the right one, as long as the tag comes before the first
word of the sentence it means); a sentence without a tag is classified from
its text (:class:`engines.expression.text_emotion.ReplyEmotion`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engines.expression.emotions import EmotionCue
from engines.expression.tags import EmotionTag, TagStripper
from engines.expression.text_emotion import ReplyEmotion
from engines.tts import split_sentences


@dataclass(frozen=True)
class SentenceEmotion:
    """The emotion of one sentence of a text, and where the sentence starts (word index in the clean text)."""

    word: int
    cue: EmotionCue
    text: str


def annotate(text: str, reply: ReplyEmotion, continues: bool = False) -> tuple[str, list[SentenceEmotion]]:
    """``text`` without tags (words separated by single spaces) and one :class:`SentenceEmotion` per sentence.

    ``continues``: the text's first sentence is the rest of one whose beginning was annotated already (a
    reply's first words spoken before its first sentence was complete): it keeps that emotion, so it gets
    no :class:`SentenceEmotion` of its own unless a tag stands in it.
    """
    stripper = TagStripper()
    pieces = [*stripper.feed(text), *stripper.flush()]
    words: list[str] = []
    tag_at: dict[int, EmotionCue] = {}  # word index of the next word after a tag → the tag's emotion
    for piece in pieces:
        if isinstance(piece, EmotionTag):
            if piece.cue is not None:
                tag_at.setdefault(len(words), piece.cue)
        else:
            words.extend(piece.split())
    clean = " ".join(words)
    out: list[SentenceEmotion] = []
    start = 0
    for i, sentence in enumerate(split_sentences(clean)):
        n = len(sentence.split())
        tag = next((tag_at[w] for w in range(start, start + n) if w in tag_at), None)
        if not (continues and i == 0 and tag is None):
            cue = replace(reply.next(sentence, tag), text=sentence)
            out.append(SentenceEmotion(start, cue, sentence))
        start += n
    return clean, out

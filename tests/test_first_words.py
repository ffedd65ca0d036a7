"""A streamed LLM reply's first words reach Piper before its first sentence is complete."""

from __future__ import annotations

from typing import cast

import pytest
from pipecat.frames.frames import (
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.tests.utils import run_test

from engines.expression.annotate import annotate
from engines.expression.text_emotion import ReplyEmotion, TextEmotionClassifier
from engines.stt import WhisperSTT
from engines.tts import PiperTTS, split_text
from realtime.conversation.first_words import FirstWordsAggregator, first_piece
from realtime.conversation.services import AlignedPiperTTSService, SpeechModels

REPLY = "Tomorrow will be sunny and warm across the whole region, so take your hat. Rain comes on Friday."


def tokens(text: str) -> list[str]:
    """The text as an LLM streams it: each word with its leading space, split in two."""
    out = []
    for i, word in enumerate(text.split(" ")):
        word = word if i == 0 else " " + word
        out += [word[: len(word) // 2 + 1], word[len(word) // 2 + 1 :]]
    return [t for t in out if t]


def test_first_piece_is_the_cut_of_the_whole_sentence_once_nothing_can_move_it() -> None:
    first = split_text(REPLY)[0]  # 8 words reached, but a comma two words on: the cut waits for it
    assert first == "Tomorrow will be sunny and warm across the whole region,"
    words = REPLY.split(" ")
    settled = None
    for n in range(1, len(words)):
        cut = first_piece(" ".join(words[:n]) + " ")
        if cut is not None:
            settled = n
            break
    assert settled is not None and settled < len(REPLY.split(". ")[0].split())  # before the sentence ends
    cut = first_piece(" ".join(words[:settled]) + " ")
    assert cut is not None and cut[0] == first and cut[1].split() == words[len(first.split()) : settled]
    assert first_piece(" ".join(words[:settled])) is None  # its last word may still be arriving
    # a limit cut before a conjunction, far from any comma: settled a few words after the limit
    plain = "I think that we should all go to the beach and then have some ice cream together later."
    assert first_piece(plain + " ") is not None
    assert first_piece(plain + " ")[0] == split_text(plain)[0]


async def collect(aggregator: FirstWordsAggregator, pieces: list[str]) -> list[tuple[int, str]]:
    """(index of the token after which it came out, text) of every aggregation, then the flush."""
    out = []
    for i, token in enumerate(pieces):
        out += [(i, a.text) async for a in aggregator.aggregate(token)]
    rest = await aggregator.flush()
    if rest is not None:
        out.append((len(pieces), rest.text))
    return out


async def test_the_first_piece_leaves_before_the_first_sentence_ends() -> None:
    aggregator = FirstWordsAggregator()
    stream = tokens(REPLY)
    out = await collect(aggregator, stream)
    first = split_text(REPLY)[0]
    sentence_end = next(i for i, t in enumerate(stream) if "." in t)
    assert out[0][1] == first
    assert out[0][0] < sentence_end  # before the LLM finished its first sentence
    assert " ".join(text for _, text in out) == REPLY  # every word once, in order
    assert out[1][1] == REPLY.split(". ")[0][len(first) + 1 :] + "."  # then the rest of that sentence
    assert [text for _, text in out[2:]] == ["Rain comes on Friday."]
    # the rest of the first sentence is known as its continuation, once
    assert aggregator.continues(out[1][1]) and not aggregator.continues(out[1][1])
    assert not aggregator.continues(out[2][1])


async def test_a_short_first_sentence_goes_as_a_sentence_and_every_reply_starts_short() -> None:
    aggregator = FirstWordsAggregator()
    out = await collect(aggregator, tokens("Sure! " + REPLY))
    assert out[0][1] == "Sure!"
    assert not aggregator.continues(out[1][1])  # a whole sentence, not the rest of a cut one
    again = await collect(aggregator, tokens(REPLY))  # the next reply (after the flush) starts short again
    assert again[0][1] == split_text(REPLY)[0]


async def test_an_interruption_drops_the_half_reply() -> None:
    aggregator = FirstWordsAggregator()
    for token in tokens("Well I was going to say something"):
        [a async for a in aggregator.aggregate(token)]
    await aggregator.handle_interruption()
    out = await collect(aggregator, tokens(REPLY))
    assert " ".join(t for _, t in out) == REPLY


def test_the_rest_of_a_cut_sentence_keeps_its_emotion() -> None:
    reply = ReplyEmotion(TextEmotionClassifier().load())
    _clean, first = annotate("I am so happy for you,", reply)
    _clean, rest = annotate("it is wonderful news. But I feel sad now.", reply, continues=True)
    assert [s.text for s in first] == ["I am so happy for you,"]
    assert [s.text for s in rest] == ["But I feel sad now."] and rest[0].word == 4


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS.load()


async def test_piper_speaks_before_the_llm_ends_its_first_sentence(tts: PiperTTS) -> None:
    """Half a sentence from the LLM, no end: the first piece is already audio (sentence aggregation
    would still be waiting for the full stop)."""
    service = AlignedPiperTTSService(SpeechModels(stt=cast(WhisperSTT, None), tts=tts))
    half = " ".join(REPLY.split(" ")[:13]) + " "  # up to "so take your": the first cut is settled
    frames = [LLMFullResponseStartFrame(), *[LLMTextFrame(t) for t in tokens(half)]]
    down, _ = await run_test(service, frames_to_send=frames)
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    said = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert audio, "no audio before the sentence ended"
    assert " ".join(said).split() == split_text(REPLY)[0].split()
    # and a whole reply is still spoken, word for word, once it ends
    service = AlignedPiperTTSService(SpeechModels(stt=cast(WhisperSTT, None), tts=tts))
    down, _ = await run_test(
        service,
        frames_to_send=[
            LLMFullResponseStartFrame(),
            *[LLMTextFrame(t) for t in tokens(REPLY)],
            LLMFullResponseEndFrame(),
        ],
    )
    assert " ".join(f.text for f in down if isinstance(f, TTSTextFrame)).split() == REPLY.split()

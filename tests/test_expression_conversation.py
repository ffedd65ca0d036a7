"""Emotion in the conversation: LLM tags stripped before Piper (never spoken), text fallback, the prompt.

Real Piper throughout: what is spoken is checked on the phonemes Piper
aligned to the audio it made.
"""

from __future__ import annotations

from typing import cast

import pytest

from engines.expression.tags import tag_instruction
from engines.stt import WhisperSTT
from engines.tts import PiperTTS
from realtime.conversation.brains import system_instruction
from realtime.conversation.services import AlignedPiperTTSService, AlignedTTSAudioRawFrame, SpeechModels
from realtime.settings import Settings

SILENT = set("^$ ,.!?")


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS.load()


@pytest.fixture
def service(tts: PiperTTS) -> AlignedPiperTTSService:
    return AlignedPiperTTSService(SpeechModels(stt=cast(WhisperSTT, None), tts=tts))  # TTS only


def spoken(frames: list[AlignedTTSAudioRawFrame]) -> str:
    """The phonemes Piper said, pauses and punctuation left out."""
    return "".join(a.phoneme for f in frames for a in f.alignments if a.phoneme not in SILENT)


def said(tts: PiperTTS, text: str) -> str:
    return "".join(a.phoneme for c in tts.synthesize(text) for a in c.alignments if a.phoneme not in SILENT)


async def synth(
    service: AlignedPiperTTSService, text: str, context: str = "r"
) -> list[AlignedTTSAudioRawFrame]:
    frames = [f async for f in service.run_tts(text, context)]
    assert frames and all(isinstance(f, AlignedTTSAudioRawFrame) for f in frames)
    return cast(list[AlignedTTSAudioRawFrame], frames)


async def test_the_tag_is_stripped_and_never_spoken(service: AlignedPiperTTSService, tts: PiperTTS) -> None:
    frames = await synth(service, "[happy] Hello there, my friend.")
    assert spoken(frames) == said(tts, "Hello there, my friend.")
    assert "hˈæpi" not in spoken(frames) and "hˈæpi" in said(tts, "happy hello")  # would show if spoken
    cue = frames[0].emotion
    assert cue is not None and (cue.name, cue.source, cue.text) == ("happy", "tag", "Hello there, my friend.")
    assert all(f.emotion is None for f in frames[1:])


async def test_every_sentence_gets_its_own_emotion_on_the_chunk_that_starts_it(
    service: AlignedPiperTTSService, tts: PiperTTS
) -> None:
    text = "[surprised 0.9] Wow, you made it! [sad] But the last train has gone, I am afraid."
    frames = await synth(service, text)
    assert spoken(frames) == said(tts, "Wow, you made it! But the last train has gone, I am afraid.")
    cues = [(i, f.emotion) for i, f in enumerate(frames) if f.emotion is not None]
    assert [(c.name, c.intensity, c.source) for _, c in cues] == [
        ("surprised", 0.9, "tag"),
        ("sad", 0.7, "tag"),
    ]
    second = cues[1][0]
    # the sad cue rides on the first chunk of the second sentence: what precedes it says sentence one
    assert spoken(frames[:second]) == said(tts, "Wow, you made it!")


async def test_without_a_tag_the_words_decide(service: AlignedPiperTTSService, tts: PiperTTS) -> None:
    happy = await synth(service, "What a wonderful day, I love it!", "a")
    assert happy[0].emotion is not None and (happy[0].emotion.name, happy[0].emotion.source) == (
        "happy",
        "text",
    )
    invented = await synth(
        service, "[grumpy] I am so sorry, the news is terrible.", "b"
    )  # a tag we don't know
    assert spoken(invented) == said(tts, "I am so sorry, the news is terrible.")
    assert invented[0].emotion is not None
    assert (invented[0].emotion.name, invented[0].emotion.source) == ("sad", "text")


async def test_the_mood_of_a_reply_carries_over_its_sentences_and_resets_with_the_next(
    service: AlignedPiperTTSService,
) -> None:
    first = await synth(service, "That is fantastic news, congratulations!", "reply-1")
    plain = await synth(service, "The meeting is at five.", "reply-1")  # the same reply: mood carried
    fresh = await synth(service, "The meeting is at five.", "reply-2")  # a new reply: neutral
    assert first[0].emotion is not None and plain[0].emotion is not None and fresh[0].emotion is not None
    assert plain[0].emotion.name == "happy" and plain[0].emotion.intensity < first[0].emotion.intensity
    assert fresh[0].emotion.name == "neutral"


async def test_a_text_of_only_tags_says_nothing(service: AlignedPiperTTSService) -> None:
    assert [f async for f in service.run_tts("[happy] ", "r")] == []


def test_the_llm_is_asked_for_tags_only_when_expressive() -> None:
    on = system_instruction(Settings(system_prompt="Be brief."))
    assert on is not None and on.startswith("Be brief.") and tag_instruction() in on
    assert system_instruction(Settings(system_prompt="Be brief.", expressiveness=0.0)) == "Be brief."
    assert system_instruction(Settings(system_prompt="", expressiveness=0.0)) is None


# --- the avatar stage: any Pipecat TTS ---------------------------------------------------------------


async def test_the_avatar_stage_gives_announced_sentences_their_emotion_and_nods_at_pauses() -> None:
    """A TTS that is not ours (plain TTSAudioRawFrame): the emotion comes from the sentence Pipecat
    announces before its audio; the transcript loses the tag; a VAD pause inside the user's turn nods."""
    import numpy as np
    from avatar_doubles import CallLogWithEmotion
    from event_log import record
    from pipecat.frames.frames import (
        AggregatedTextFrame,
        TTSAudioRawFrame,
        TTSTextFrame,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.tests.utils import run_test

    from realtime.conversation.avatar_output import AvatarOutput

    def announce(text: str) -> AggregatedTextFrame:
        frame = AggregatedTextFrame(text, text_type="sentence", context_id="reply-1")
        frame.will_be_spoken = True
        return frame

    def audio() -> TTSAudioRawFrame:
        return TTSAudioRawFrame(np.zeros(480, np.int16).tobytes(), 24000, 1, context_id="reply-1")

    avatar = CallLogWithEmotion()
    events: list[dict[str, object]] = []
    await run_test(
        AvatarOutput(avatar, record(events)),
        frames_to_send=[
            UserStartedSpeakingFrame(),
            VADUserStoppedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            VADUserStoppedSpeakingFrame(),  # after the turn: no nod
            announce("[sad] I am sorry to hear that."),
            audio(),
            audio(),
            TTSTextFrame("[sad] I am sorry to hear that.", text_type="sentence"),
            announce("What a wonderful party, I love it!"),
            audio(),
        ],
    )
    cues = avatar.emotions
    assert len(cues) == 3 and cues[1] is None  # only the chunk that starts a sentence carries one
    assert (cues[0].name, cues[0].source) == ("sad", "tag")
    assert (cues[2].name, cues[2].source) == ("happy", "text")
    assert [c for c in avatar.calls if c[0] == "user_pause"] == [("user_pause", None)]
    assert [e["text"] for e in events if e["type"] == "transcript"] == ["I am sorry to hear that."]

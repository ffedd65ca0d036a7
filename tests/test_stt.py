"""WhisperSTT: a window as long as the speech transcribes like faster-whisper's 30 s window."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soxr

from engines.stt import SAMPLE_RATE, STTError, WhisperSTT, window_frames
from realtime.conversation.services import SpeechModels

SENTENCES = (
    "Please tell me what the weather will be like tomorrow.",
    "I would like to book a table for two people.",
    "Yes.",
    "Hello there!",
    "Turn off the lights in the kitchen, please.",
)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


def _word_errors(hyp: list[str], ref: list[str]) -> int:
    """Word-level edit distance."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def _speech(models: SpeechModels, text: str, tail_s: float = 0.5) -> np.ndarray:
    """[N] float32 16 kHz: Piper speech plus the silence the segmented STT service appends."""
    chunks = list(models.tts.synthesize(text))
    pcm = soxr.resample(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate, SAMPLE_RATE)
    return np.concatenate([pcm, np.zeros(int(tail_s * SAMPLE_RATE))]).astype(np.float32)


@pytest.fixture(scope="module")
def full_window(speech_models: SpeechModels) -> WhisperSTT:
    """The same loaded model, transcribing with faster-whisper's own 30 s windows."""
    return WhisperSTT(speech_models.stt._model, window_s=30.0)


def test_window_follows_the_speech() -> None:
    assert window_frames(2 * SAMPLE_RATE) == 1500  # 2 s of speech: the 15 s minimum
    assert window_frames(int(16.5 * SAMPLE_RATE)) == 1750  # 16.5 s + 1 s of silence
    assert window_frames(29 * SAMPLE_RATE) == 3000
    assert window_frames(30 * SAMPLE_RATE) is None  # longer than one window: faster-whisper's path
    assert window_frames(2 * SAMPLE_RATE, window_s=30.0) is None


@pytest.mark.parametrize("text", SENTENCES)
def test_short_window_transcribes_like_the_full_window(
    speech_models: SpeechModels, full_window: WhisperSTT, text: str
) -> None:
    pcm = _speech(speech_models, text)
    short = speech_models.stt.transcribe(pcm)
    assert speech_models.stt.window_s < 30.0
    assert _words(short) == _words(full_window.transcribe(pcm))
    assert _words(short) == _words(text)


def test_speech_longer_than_the_minimum_window(speech_models: SpeechModels, full_window: WhisperSTT) -> None:
    """~17 s of speech gets a window of its own length: every sentence, the last one too."""
    text = (
        "The quick brown fox jumps over the lazy dog. Can you explain how the avatar moves its lips? "
        "What time does the train to Boston leave on Friday morning? Please tell me what the weather "
        "will be like tomorrow. I would like to book a table for two people. Could you remind me to call "
        "my sister?"
    )
    pcm = _speech(speech_models, text)
    assert 15 * SAMPLE_RATE < pcm.size < 28 * SAMPLE_RATE
    words = _words(speech_models.stt.transcribe(pcm))
    assert _word_errors(words, _words(text)) <= 0.1 * len(_words(text))
    assert words[-6:] == ["remind", "me", "to", "call", "my", "sister"]


def test_silence_and_empty_input_give_no_text(speech_models: SpeechModels) -> None:
    assert speech_models.stt.transcribe(np.zeros(SAMPLE_RATE, np.float32)) == ""
    assert speech_models.stt.transcribe(np.zeros(0, np.float32)) == ""


def test_bad_input_and_settings_are_refused(speech_models: SpeechModels) -> None:
    with pytest.raises(STTError, match="mono"):
        speech_models.stt.transcribe(np.zeros((2, 100), np.float32))
    with pytest.raises(STTError, match="float32"):
        speech_models.stt.transcribe(np.zeros(100, np.int16))
    with pytest.raises(STTError, match="window_s"):
        WhisperSTT(speech_models.stt._model, window_s=60.0)

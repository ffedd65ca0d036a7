"""The conversation's own pieces, without models: mic conversion, echo brain, avatar output, brain settings."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest
from avatar_doubles import CallLogWithEmotion
from event_log import record
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from engines.tts import Alignment
from realtime.conversation.avatar_output import AvatarOutput
from realtime.conversation.brains import BrainError, EchoBrain, make_brain
from realtime.conversation.mic_audio import MicAudioConverter, MicAudioError
from realtime.conversation.services import AlignedTTSAudioRawFrame
from realtime.settings import Settings

# --------------------------------------------------------------------------- mic audio


def sine(freq: float, rate: int, n: int, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # [n]


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, np.int16).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_stereo_48k_aiortc_frames_become_16k_mono_at_the_same_pitch() -> None:
    converter = MicAudioConverter()
    out = b""
    for k in range(50):  # 1 s in 20 ms frames, as aiortc delivers them
        left = sine(440.0, 48_000, 960, start=k * 960)
        packed = np.stack([left, left], axis=1).reshape(1, -1)  # [1, 960*2] interleaved
        frame = av.AudioFrame.from_ndarray((packed * 32767).astype(np.int16), format="s16", layout="stereo")
        frame.sample_rate = 48_000
        out += converter.convert(frame)
    n = len(out) // 2
    assert 16_000 - 320 <= n <= 16_000  # 1 s at 16 kHz, less the resampler delay (under 20 ms)
    assert abs(dominant_hz(out, 16_000) - 440.0) < 3.0
    level = np.abs(np.frombuffer(out, np.int16)[n // 2 :]).max() / 32767
    assert 0.45 < level < 0.55  # mixed down, not summed or halved


def test_planar_channels_are_averaged() -> None:
    converter = MicAudioConverter()
    x = sine(300.0, 16_000, 320)
    planar = np.stack([x, -x])  # [2, 320]: opposite phases cancel in a mono mix
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
    frame.sample_rate = 16_000
    out = np.frombuffer(converter.convert(frame), np.int16)
    assert out.shape == (320,)
    assert np.abs(out).max() <= 1


def test_16k_mono_numpy_passes_through_exactly() -> None:
    pcm = (sine(200.0, 16_000, 320) * 32767).astype(np.int16)
    assert MicAudioConverter().convert(pcm, 16_000) == pcm.tobytes()


def test_interleaved_numpy_needs_a_sample_rate_and_whole_frames() -> None:
    converter = MicAudioConverter()
    with pytest.raises(MicAudioError, match="sample_rate"):
        converter.convert(np.zeros(320, np.int16))
    with pytest.raises(MicAudioError, match="channels"):
        converter.convert(np.zeros(321, np.int16), 16_000, channels=2)
    with pytest.raises(MicAudioError, match="dtype"):
        converter.convert(np.zeros(320, np.uint8), 16_000)


# --------------------------------------------------------------------------- echo brain


async def test_echo_brain_repeats_the_new_user_message_once() -> None:
    context = LLMContext(messages=[{"role": "user", "content": "Hello avatar."}])
    brain = EchoBrain()
    down, _ = await run_test(
        brain,
        frames_to_send=[LLMContextFrame(context=context), LLMContextFrame(context=context)],
        expected_down_frames=[LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame],
    )
    assert isinstance(down[1], LLMTextFrame) and down[1].text == "Hello avatar."


async def test_echo_brain_answers_the_last_user_message_not_the_assistant() -> None:
    context = LLMContext(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second one"}]},
        ]
    )
    down, _ = await run_test(EchoBrain(), frames_to_send=[LLMContextFrame(context=context)])
    assert [f.text for f in down if isinstance(f, LLMTextFrame)] == ["second one"]


# --------------------------------------------------------------------------- avatar output


class CallLog(CallLogWithEmotion):
    """Records AvatarSink calls (the methods the conversation uses), with each chunk's format, and can
    refuse audio as a stream does for a bad sample rate."""

    def __init__(self, refuse_audio: bool = False) -> None:
        super().__init__()
        self.refuse_audio = refuse_audio

    def push_tts_audio(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Any,
        reply: str | None,
        emotion: Any = None,
        emphasis: Any = None,
    ) -> bool:
        if self.refuse_audio:
            raise ValueError("sample rate out of range")
        self.calls.append(("push_tts_audio", (pcm.dtype, len(pcm), sample_rate, alignments)))
        self.emotions.append(emotion)
        return True

    def add_listener(self, fn: Any) -> None:
        self.calls.append(("add_listener", None))

    def remove_listener(self, fn: Any) -> None:
        self.calls.append(("remove_listener", None))


async def test_avatar_output_maps_frames_to_avatar_calls_and_events() -> None:
    avatar = CallLog()
    events: list[dict[str, Any]] = []
    alignments = (Alignment("h", 100), Alignment("ə", 120), Alignment("$", 20))
    aligned = AlignedTTSAudioRawFrame(
        audio=np.zeros(240, np.int16).tobytes(), sample_rate=22050, num_channels=1, alignments=alignments
    )
    plain = TTSAudioRawFrame(audio=np.zeros(480, np.int16).tobytes(), sample_rate=24000, num_channels=1)
    stereo = TTSAudioRawFrame(audio=np.zeros(2 * 100, np.int16).tobytes(), sample_rate=24000, num_channels=2)
    down, _ = await run_test(
        AvatarOutput(avatar, record(events)),
        frames_to_send=[
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            aligned,
            TTSTextFrame("Hi there.", text_type="sentence"),
            plain,
            stereo,
            TTSStoppedFrame(),
            InterruptionFrame(),
        ],
    )
    assert len(down) == 8  # everything passes on to the assistant aggregator
    # system frames (user speaking, interruption) overtake queued data frames: compare each kind in order
    system = [c for c in avatar.calls if c[0] in ("set_user_speaking", "interrupt")]
    data = [c for c in avatar.calls if c[0] in ("push_tts_audio", "end_utterance")]
    assert system == [("set_user_speaking", True), ("set_user_speaking", False), ("interrupt", None)]
    assert data == [
        ("push_tts_audio", (np.dtype(np.int16), 240, 22050, alignments)),
        ("push_tts_audio", (np.dtype(np.int16), 480, 24000, None)),
        ("push_tts_audio", (np.dtype(np.int16), 100, 24000, None)),  # stereo mixed down to mono
        ("end_utterance", None),
    ]
    assert [e for e in events if e["type"] == "user_speaking"] == [
        {"type": "user_speaking", "speaking": True},
        {"type": "user_speaking", "speaking": False},
    ]
    assert [e for e in events if e["type"] == "transcript"] == [
        {"type": "transcript", "role": "assistant", "text": "Hi there."}
    ]


async def test_a_refused_chunk_is_reported_and_the_pipeline_goes_on() -> None:
    events: list[dict[str, Any]] = []
    frame = TTSAudioRawFrame(audio=np.zeros(480, np.int16).tobytes(), sample_rate=24000, num_channels=1)
    down, _ = await run_test(AvatarOutput(CallLog(refuse_audio=True), record(events)), frames_to_send=[frame])
    assert down == [frame]
    assert [e["type"] for e in events] == ["error"]


# --------------------------------------------------------------------------- brain settings


def test_openai_brain_needs_a_model_and_keeps_the_key_out_of_repr() -> None:
    with pytest.raises(BrainError, match="--llm-model"):
        make_brain(Settings(brain="openai", llm_url="http://127.0.0.1:1/v1", llm_key="sk-secret"))
    settings = Settings(brain="openai", llm_url="http://127.0.0.1:1/v1", llm_model="m", llm_key="sk-secret")
    brain = make_brain(settings)
    assert type(brain).__name__ == "GuardedOpenAILLMService"  # Pipecat's OpenAILLMService, guarded
    assert getattr(brain, "_timeout_s", None) == settings.llm_timeout_s == 15.0
    assert "sk-secret" not in repr(settings) and "sk-secret" not in str(settings.public_dict())
    assert isinstance(make_brain(Settings()), EchoBrain)


# --------------------------------------------------------------------------- loguru → logging


def test_loguru_records_reach_stdlib_logging_under_their_module_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from loguru import logger as loguru_logger

    from realtime.cli.log_bridge import route_loguru_to_logging

    caplog.set_level(logging.INFO)
    sink_id = route_loguru_to_logging(replace_default=False, level=logging.INFO)
    try:
        loguru_logger.debug("too quiet to pass")
        loguru_logger.warning("the model crashed")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            loguru_logger.exception("it failed")
    finally:
        loguru_logger.remove(sink_id)
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        (__name__, logging.WARNING, "the model crashed"),
        (__name__, logging.ERROR, "it failed"),
    ]
    assert caplog.records[1].exc_info is not None and caplog.records[1].exc_info[0] is RuntimeError

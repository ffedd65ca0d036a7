"""The user's pause (realtime.conversation.pause) and Whisper starting at it (SharedWhisperSTTService).

The VAD cases run Pipecat's real Silero state machine with the model's
confidence scripted per 32 ms window (loud audio, so the volume gate passes):
the state sequence is then exact. The STT cases call the real service with the
bundled Whisper on Piper speech.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
import pytest
import soxr
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import TranscriptionFrame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame

from realtime.conversation.pause import PAUSE_S, PauseSileroVAD
from realtime.conversation.pipeline import build_pipeline, make_turn_aggregators
from realtime.conversation.services import SharedWhisperSTTService, SpeechModels
from realtime.conversation.turn_models import TurnModels
from realtime.settings import Settings

RATE = 16_000
WINDOW = 512  # Silero's analysis window at 16 kHz (32 ms)
FRAME = 320  # 20 ms, as the pipeline's audio frames
WARM = 20  # quiet windows before a script (640 ms)


class Heard:
    """A PauseListener that records what it was told and the VAD state at that moment."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def user_paused(self) -> None:
        self.calls.append("paused")

    def user_resumed(self) -> None:
        self.calls.append("resumed")


def scripted_vad(
    monkeypatch: pytest.MonkeyPatch, listener: Heard, confidences: list[float], shared: bool = False
) -> PauseSileroVAD:
    """A PauseSileroVAD (``shared``: the pipelines' one, on the process's shared Silero session) whose
    model answers ``confidences`` window by window (then 0), after ``WARM`` quiet windows (Pipecat's
    volume gate measures loudness over 400 ms before it opens)."""
    if shared:
        vad = TurnModels.load().vad_analyzer(RATE, listener=listener)
    else:
        vad = PauseSileroVAD(sample_rate=RATE, listener=listener)
    vad.set_sample_rate(RATE)
    script = iter([0.0] * WARM + confidences)
    monkeypatch.setattr(vad, "voice_confidence", lambda _buffer: next(script, 0.0))
    return vad


async def feed(vad: PauseSileroVAD, windows: int, listener: Heard) -> list[tuple[VADState, list[str]]]:
    """Loud audio for ``WARM`` + ``windows`` analysis windows in 20 ms frames; the state and calls
    after each frame."""
    t = np.arange((WARM + windows) * WINDOW) / RATE
    pcm = (0.5 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16).tobytes()
    out = []
    for i in range(0, len(pcm), FRAME * 2):
        state = await vad.analyze_audio(pcm[i : i + FRAME * 2])
        out.append((state, list(listener.calls)))
    return out


@pytest.mark.parametrize("shared", [False, True], ids=["own-session", "shared-session"])
async def test_a_stop_is_preceded_by_one_pause_and_no_resume(
    monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    heard = Heard()
    vad = scripted_vad(monkeypatch, heard, [1.0] * 20, shared)
    trace = await feed(vad, 40, heard)
    states = [s for s, _ in trace]
    assert VADState.SPEAKING in states and states[-1] == VADState.QUIET
    assert heard.calls == ["paused"]
    paused_at = next(i for i, (_, calls) in enumerate(trace) if calls)
    quiet_at = states.index(VADState.QUIET, states.index(VADState.SPEAKING))
    assert states[paused_at] == VADState.STOPPING
    assert paused_at < quiet_at  # told before the VAD's stop
    stopping_at = states.index(VADState.STOPPING)
    assert (
        paused_at - stopping_at + 1
    ) * FRAME / RATE >= PAUSE_S - WINDOW / RATE  # not at the first quiet window


async def test_a_dip_shorter_than_a_pause_is_not_one(monkeypatch: pytest.MonkeyPatch) -> None:
    heard = Heard()
    vad = scripted_vad(monkeypatch, heard, [1.0] * 10 + [0.0] * 2 + [1.0] * 10)
    trace = await feed(vad, 22, heard)
    assert VADState.STOPPING in [s for s, _ in trace]
    assert heard.calls == []


@pytest.mark.parametrize("shared", [False, True], ids=["own-session", "shared-session"])
async def test_speech_after_a_pause_resumes_it(monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    heard = Heard()
    vad = scripted_vad(monkeypatch, heard, [1.0] * 10 + [0.0] * 4 + [1.0] * 10, shared)
    trace = await feed(vad, 24, heard)
    assert heard.calls == ["paused", "resumed"]
    assert trace[-1][0] == VADState.SPEAKING


def test_pause_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pause_s"):
        PauseSileroVAD(sample_rate=RATE, pause_s=0.0)


def test_the_pipelines_vad_tells_its_stt() -> None:
    heard = Heard()
    user = make_turn_aggregators(pause_listener=heard).user()
    assert user._params.vad_analyzer.listener is heard


@pytest.mark.slow
def test_build_pipeline_wires_the_pause_to_whisper(speech_models: SpeechModels) -> None:
    from pipecat.processors.frame_processor import FrameProcessor

    built = build_pipeline(Settings(brain="echo"), speech_models, FrameProcessor())
    assert isinstance(built.stt, SharedWhisperSTTService)
    assert built.user_aggregator._params.vad_analyzer.listener is built.stt


# --------------------------------------------------------------------------- Whisper at the pause


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def speech_16k(models: SpeechModels, text: str) -> bytes:
    chunks = list(models.tts.synthesize(text))
    pcm = np.asarray(soxr.resample(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate, RATE))
    return (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


async def transcripts(stt: SharedWhisperSTTService, segment: Any) -> list[str]:
    return [f.text async for f in stt.run_stt(segment) if isinstance(f, TranscriptionFrame)]


@pytest.mark.slow
async def test_a_stop_after_a_pause_takes_the_transcript_started_at_it(speech_models: SpeechModels) -> None:
    said = "Please tell me what the weather will be like tomorrow."
    stt = SharedWhisperSTTService(speech_models.stt)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    stt._audio_buffer += speech_16k(speech_models, said)
    stt.user_paused()
    early = stt._early
    assert isinstance(early, asyncio.Task)
    stt.user_paused()  # a second word of the same pause starts nothing new
    assert stt._early is early
    stt._audio_buffer += bytes(2 * int(0.1 * RATE))  # the rest of the VAD's stop silence
    await stt._handle_user_stopped_speaking(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    segment = stt._segment_queue.get_nowait()
    assert segment is early
    assert stt.early_transcripts == 1
    assert len(stt._audio_buffer) == 0
    assert [normalise(t) for t in await transcripts(stt, segment)] == [normalise(said)]


@pytest.mark.slow
async def test_speech_after_the_pause_drops_the_early_transcript(speech_models: SpeechModels) -> None:
    first, rest = "I would like to book a table", "for two people."
    stt = SharedWhisperSTTService(speech_models.stt)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    stt._audio_buffer += speech_16k(speech_models, first)
    stt.user_paused()
    dropped = stt._early
    assert dropped is not None
    stt.user_resumed()
    assert stt._early is None
    stt._audio_buffer += speech_16k(speech_models, rest)
    await stt._handle_user_stopped_speaking(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    segment = stt._segment_queue.get_nowait()
    assert isinstance(segment, bytes)  # the whole segment, transcribed afresh
    assert stt.early_transcripts == 0
    heard = normalise(" ".join(await transcripts(stt, segment)))
    assert heard == normalise(f"{first} {rest}")
    await dropped  # it ran to its end unheard


@pytest.mark.slow
async def test_no_pause_is_heard_while_the_user_is_not_speaking(speech_models: SpeechModels) -> None:
    stt = SharedWhisperSTTService(speech_models.stt)
    stt.user_paused()
    assert stt._early is None

"""Helpers shared by the conversation tests: mic speech made with Piper, frame jobs taken at the frame rate,
and the real AvatarStream recording what the conversation does to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
import soxr
from event_log import record

from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS
from realtime.conversation.services import SpeechModels
from realtime.media.stream import AvatarStream

MIC_RATE = 48_000
WAIT_S = 20.0  # generous: the 2-core dev box is shared
CHANNELS = (*ARKIT_BLENDSHAPES, *POSE_CHANNELS)


def speech_at_48k(models: SpeechModels, text: str, lead_s: float = 0.0) -> np.ndarray:
    """[N] float32 mic signal: Piper speech at 48 kHz, after ``lead_s`` seconds of silence."""
    chunks = list(models.tts.synthesize(text))
    lead = np.zeros(int(lead_s * chunks[0].sample_rate), np.float32)
    pcm = np.concatenate([lead, *[c.pcm for c in chunks]])
    return np.asarray(soxr.resample(pcm, chunks[0].sample_rate, MIC_RATE), dtype=np.float32)


@contextlib.asynccontextmanager
async def frames_played(avatar: AvatarStream) -> AsyncIterator[None]:
    """Take the avatar's frame jobs at its frame rate, as the session's FrameClock does (no rendering)."""

    async def pump() -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, start + avatar.frame_index / avatar.fps - time.monotonic()))
            avatar.next_frame_job()

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def chat_chunk(content: str | None, finish: str | None = None) -> bytes:
    """One server-sent event of an OpenAI-compatible streaming chat completion."""
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class RecordingAvatar(AvatarStream):
    """The real AvatarStream, recording every call the conversation makes on it (and its events, as JSON)."""

    def __init__(self) -> None:
        super().__init__(CHANNELS, fps=25)
        self.calls: list[tuple[str, Any]] = []
        self.audio: list[tuple[np.ndarray, int, Sequence[Any] | None]] = []
        self.emotions: list[Any] = []  # the EmotionCue (or None) that came with each chunk
        self.events: list[dict[str, Any]] = []
        self.add_listener(record(self.events))
        self.changed = asyncio.Event()

    def _record(self, name: str, value: Any = None) -> None:
        self.calls.append((name, value))
        self.changed.set()

    def push_tts_audio(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Any = None,
        reply: str | None = None,
        emotion: Any = None,
        emphasis: Any = None,
    ) -> bool:
        accepted = super().push_tts_audio(
            pcm, sample_rate, alignments, reply=reply, emotion=emotion, emphasis=emphasis
        )
        self.audio.append((np.array(pcm), sample_rate, alignments))
        self.emotions.append(emotion)
        self._record("push_tts_audio", len(self.audio) - 1)
        return accepted

    def user_pause(self) -> None:
        super().user_pause()
        self._record("user_pause")

    def end_utterance(self) -> None:
        super().end_utterance()
        self._record("end_utterance")

    def interrupt(self) -> None:
        super().interrupt()
        reported = [e for e in self.events if e["type"] == "interrupted"][-1]
        self._record("interrupt", reported["had_speech"])

    def set_user_speaking(self, speaking: bool) -> None:
        super().set_user_speaking(speaking)
        self._record("set_user_speaking", speaking)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; avatar calls so far: {self.names()}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 0.1))

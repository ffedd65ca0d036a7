"""Helpers shared by the conversation tests: mic speech made with Piper, and frame jobs taken at the frame rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import numpy as np
import soxr

from realtime.conversation.services import SpeechModels
from realtime.media.stream import AvatarStream

MIC_RATE = 48_000


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

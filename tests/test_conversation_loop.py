"""The conversation loop end to end with the real bundled models (Piper, Whisper, Silero, Smart Turn).

No WebRTC: user audio is Piper speech resampled to 48 kHz and fed in 20 ms
frames on a real-time schedule, as aiortc would deliver a browser's mic.

The avatar is the real :class:`realtime.media.stream.AvatarStream`, wrapped
to record the calls the conversation makes on it, and its frame jobs are taken
at 25 FPS as the session's frame clock would (nothing is rendered).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from event_log import record
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from speech_helpers import MIC_RATE, WAIT_S, RecordingAvatar, chat_chunk, frames_played, speech_at_48k

from engines.tts import Alignment
from realtime.conversation.loop import Conversation, ConversationError
from realtime.conversation.services import SpeechModels
from realtime.settings import Settings

pytestmark = pytest.mark.slow

FRAME = MIC_RATE // 50  # 20 ms


# --------------------------------------------------------------------------- doubles and helpers


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


class MicFeeder:
    """Plays queued signals into the conversation in 20 ms frames on a real-time schedule, silence between."""

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation
        self._pending: list[np.ndarray] = []
        self.speech_ended_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def play(self, signal: np.ndarray) -> None:
        self._pending.append(signal)

    async def __aenter__(self) -> MicFeeder:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        start = time.monotonic()
        k = 0
        buffer = np.zeros(0, np.float32)
        silence = np.zeros(FRAME, np.float32)
        while True:
            if buffer.size == 0 and self._pending:
                buffer = self._pending.pop(0)
            if buffer.size:
                frame, buffer = buffer[:FRAME], buffer[FRAME:]
                frame = np.pad(frame, (0, FRAME - frame.size))
                if buffer.size == 0:
                    self.speech_ended_at = start + (k + 1) * 0.02
            else:
                frame = silence
            await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
            await self._conversation.push_user_audio((frame * 32767).astype(np.int16), MIC_RATE)
            k += 1


@contextlib.asynccontextmanager
async def running(conversation: Conversation) -> AsyncIterator[Conversation]:
    await conversation.start()
    try:
        yield conversation
    finally:
        await conversation.stop()


def assert_aligned(avatar: RecordingAvatar) -> None:
    for pcm, rate, alignments in avatar.audio:
        assert rate == 22050
        assert alignments, "Piper audio must come with its phoneme alignments"
        assert all(isinstance(a, Alignment) for a in alignments)
        assert sum(a.num_samples for a in alignments) == len(pcm)
        assert any(a.phoneme.isalpha() for a in alignments)


# --------------------------------------------------------------------------- (a) echo loop


class SpeechTrack(MediaStreamTrack):
    """An aiortc audio track, as a browser's mic arrives: 48 kHz stereo s16 frames of 20 ms, real time."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self._signal = signal  # [N] float32 at 48 kHz
        self._k = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        if (self._k + 1) * FRAME > len(self._signal):
            self.stop()
            raise MediaStreamError
        await asyncio.sleep(max(0.0, self._start + self._k * 0.02 - time.monotonic()))
        x = self._signal[self._k * FRAME : (self._k + 1) * FRAME]
        stereo = np.stack([x, x], axis=1).reshape(1, -1)  # [1, 2*960] interleaved
        frame = av.AudioFrame.from_ndarray((stereo * 32767).astype(np.int16), format="s16", layout="stereo")
        frame.sample_rate = MIC_RATE
        frame.pts = self._k * FRAME
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._k += 1
        return frame


async def test_echo_loop_hears_the_user_and_the_avatar_repeats_it(speech_models: SpeechModels) -> None:
    said = "The quick brown fox jumps over the lazy dog."
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    conversation = Conversation(Settings(), avatar, record(events), models=speech_models)
    silence = np.zeros(MIC_RATE // 2, np.float32)
    mic = SpeechTrack(np.concatenate([silence, speech_at_48k(speech_models, said), *[silence] * 6]))
    async with running(conversation):
        await conversation.consume_track(mic)  # returns when the track ends
        await avatar.wait_for(lambda: "end_utterance" in avatar.names())

    user = [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "user"]
    assistant = [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "assistant"]
    assert [normalise(t) for t in user] == [normalise(said)]
    assert normalise(" ".join(assistant)) == normalise(said)
    names = avatar.names()
    assert names.index("set_user_speaking") < names.index("push_tts_audio") < names.index("end_utterance")
    assert ("set_user_speaking", False) in avatar.calls
    assert_aligned(avatar)
    spoken_s = sum(len(pcm) / rate for pcm, rate, _ in avatar.audio)
    assert 1.0 < spoken_s < 6.0  # the sentence, not silence or a fragment
    assert {"type": "user_speaking", "speaking": True} in events


# --------------------------------------------------------------------------- (b) say


class BotSpeakingSeen(BaseObserver):
    """Which processors saw the avatar start and stop talking (Pipecat's Bot*SpeakingFrames)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, BotStartedSpeakingFrame | BotStoppedSpeakingFrame):
            self.seen.append((type(data.frame).__name__, type(data.destination).__name__))


async def test_say_streams_each_sentence_with_alignments_then_ends(speech_models: SpeechModels) -> None:
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    conversation = Conversation(Settings(), avatar, record(events), models=speech_models)
    observer = BotSpeakingSeen()
    async with running(conversation), frames_played(avatar):
        conversation._worker.add_observer(observer)
        await conversation.say("Hello there. This is the second sentence. And a third one!")
        await avatar.wait_for(lambda: any(e["type"] == "utterance_done" for e in avatar.events), timeout=30)
        await avatar.wait_for(lambda: avatar.state == "idle")
        await asyncio.sleep(0.1)

    names = avatar.names()
    # one chunk per sentence, streamed; the reply's first piece ("Hello there.", ~0.7-1 s: its length follows
    # Piper's random durations) comes in decoder windows of >= 0.4 s each (engines.tts_windows), so 1 or 2
    chunks = names.count("push_tts_audio")
    assert chunks in (3, 4), chunks
    assert names[-1] == "end_utterance" and names.count("end_utterance") == 1
    assert "set_user_speaking" not in names  # no STT, no user turn
    assert_aligned(avatar)
    spoken = [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "assistant"]
    assert normalise(" ".join(spoken)) == "hello there this is the second sentence and a third one"
    # the avatar's talking state reaches both aggregators, as an output transport's would
    for frame in ("BotStartedSpeakingFrame", "BotStoppedSpeakingFrame"):
        assert (frame, "LLMUserAggregator") in observer.seen
        assert (frame, "LLMAssistantAggregator") in observer.seen
    started = [i for i, (f, _) in enumerate(observer.seen) if f == "BotStartedSpeakingFrame"]
    stopped = [i for i, (f, _) in enumerate(observer.seen) if f == "BotStoppedSpeakingFrame"]
    assert max(started) < min(stopped)


async def test_stop_frees_every_task_and_refuses_more_work(speech_models: SpeechModels) -> None:
    before = set(asyncio.all_tasks())
    avatar = RecordingAvatar()
    conversation = Conversation(Settings(), avatar, lambda event: None, models=speech_models)
    await conversation.start()
    await conversation.say("Hello.")
    await conversation.stop()
    await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert left == set(), f"tasks left running after stop(): {left}"
    assert not conversation.running
    with pytest.raises(ConversationError):
        await conversation.say("Anyone there?")


# --------------------------------------------------------------------------- (c) barge-in


async def test_user_speech_over_the_avatar_interrupts_it(speech_models: SpeechModels) -> None:
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    conversation = Conversation(Settings(), avatar, record(events), models=speech_models)
    long_text = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 9))
    async with running(conversation), frames_played(avatar), MicFeeder(conversation) as mic:
        await conversation.say(long_text)
        await avatar.wait_for(lambda: avatar.state == "speaking")
        first_audio = avatar.names().index("push_tts_audio")
        mic.play(speech_at_48k(speech_models, "Wait, stop talking please."))
        await avatar.wait_for(lambda: "interrupt" in avatar.names()[first_audio:])
        played_frames = avatar.stats.speaking_frames
        assert avatar.state == "listening"

    after = avatar.calls[first_audio:]
    assert ("set_user_speaking", True) in after
    assert ("interrupt", True) in after  # it dropped speech that was still to play
    spoken_s = sum(len(pcm) / rate for pcm, rate, _ in avatar.audio)
    assert played_frames < spoken_s * avatar.fps - 5  # cut off: what was handed over did not all play
    assert {"type": "user_speaking", "speaking": True} in events


async def test_interrupt_stops_the_reply_in_flight(speech_models: SpeechModels) -> None:
    avatar = RecordingAvatar()
    conversation = Conversation(Settings(), avatar, lambda event: None, models=speech_models)
    story = " ".join(f"Here comes part {n} of a story that will not be finished." for n in range(1, 13))
    async with running(conversation), frames_played(avatar):
        await conversation.say(story)
        await avatar.wait_for(lambda: "push_tts_audio" in avatar.names())
        await conversation.interrupt()
        await avatar.wait_for(lambda: "interrupt" in avatar.names())
        pushed_by_then = avatar.names().count("push_tts_audio")
        await asyncio.sleep(1.5)  # Piper would have finished several more sentences by now

    assert avatar.names().count("push_tts_audio") == pushed_by_then  # synthesis stopped with the reply
    assert pushed_by_then < 12
    assert "end_utterance" not in avatar.names()
    assert avatar.state != "speaking"


# --------------------------------------------------------------------------- (d) OpenAI-compatible brain


class FakeChatServer:
    """A loopback OpenAI-compatible /v1/chat/completions that streams SSE chunks."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()  # set by the test once the first sentence has reached the avatar
        self.released_in_time: bool | None = None
        self.fail_next = False
        self.first: list[str] = ["Hello", " there", ".", " I", " am"]  # streamed before the release ...
        self.rest: list[str] = [" the", " second", " sentence", "."]  # ... and after it
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.fail_next:
            self.fail_next = False
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response(  # a careless endpoint that echoes the key
                {"error": {"message": f"the model crashed (key {key})", "type": "server_error"}},
                status=500,
                headers={"x-should-retry": "false"},
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for token in self.first:
            await response.write(chat_chunk(token))
        try:
            await asyncio.wait_for(self.release.wait(), timeout=10.0)
            self.released_in_time = True
        except TimeoutError:
            self.released_in_time = False
        for token in self.rest:
            await response.write(chat_chunk(token))
        await response.write(chat_chunk(None, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture
def logs_as_cli(caplog: pytest.LogCaptureFixture) -> Any:
    """Everything logged, Pipecat's loguru records included, routed to stdlib logging as the CLI does."""
    from loguru import logger as loguru_logger

    from realtime.cli.log_bridge import route_loguru_to_logging

    caplog.set_level(logging.DEBUG)
    sink_id = route_loguru_to_logging(replace_default=False, level=logging.DEBUG)
    yield caplog
    loguru_logger.remove(sink_id)


async def test_openai_brain_speaks_the_first_sentence_while_the_rest_streams(
    speech_models: SpeechModels, logs_as_cli: pytest.LogCaptureFixture
) -> None:
    key = "sk-test-very-secret-key-123"
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    async with FakeChatServer() as server:
        settings = Settings(
            brain="openai",
            llm_url=server.url,
            llm_model="test-model",
            llm_key=key,
            system_prompt="You are a test.",
        )
        conversation = Conversation(settings, avatar, record(events), models=speech_models)
        async with running(conversation):
            await conversation.send_text("Say hello.")
            await avatar.wait_for(lambda: "push_tts_audio" in avatar.names())
            server.release.set()
            await avatar.wait_for(lambda: "end_utterance" in avatar.names())

    assert server.released_in_time is True, "the first sentence must reach the avatar before the last token"
    request = server.requests[0]
    assert request["headers"]["Authorization"] == f"Bearer {key}"
    assert request["body"]["model"] == "test-model"
    assert request["body"]["stream"] is True
    system = request["body"]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are a test.")
    assert request["body"]["messages"][-1] == {"role": "user", "content": "Say hello."}
    spoken = [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "assistant"]
    assert [normalise(t) for t in spoken] == ["hello there", "i am the second sentence"]
    # one chunk per sentence; the first ("Hello there.") in 1 or 2 decoder windows (engines.tts_windows)
    assert avatar.names().count("push_tts_audio") in (2, 3)
    assert_aligned(avatar)
    logs = logs_as_cli.text
    assert "Conversation: started" in logs and "OpenAILLMService" in logs  # ours and Pipecat's, at DEBUG
    assert key not in logs
    assert key not in repr(settings)


async def test_openai_brain_error_keeps_the_session_alive(
    speech_models: SpeechModels, logs_as_cli: pytest.LogCaptureFixture
) -> None:
    from realtime.web.security import SecretFilter

    key = "sk-another-secret-456"
    logs_as_cli.handler.addFilter(SecretFilter([key]))  # as the CLI's handlers have
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    async with FakeChatServer() as server:
        server.fail_next = True
        server.release.set()
        settings = Settings(brain="openai", llm_url=server.url, llm_model="m", llm_key=key)
        conversation = Conversation(settings, avatar, record(events), models=speech_models)
        async with running(conversation):
            await conversation.send_text("First try.")
            deadline = time.monotonic() + WAIT_S
            while not any(e["type"] == "error" for e in events) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert conversation.running
            await conversation.send_text("Second try.")
            await avatar.wait_for(lambda: "end_utterance" in avatar.names())

    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and "500" in errors[0]["message"]
    assert len(server.requests) == 2  # no retry storm, and the next turn still reached the endpoint
    assert "push_tts_audio" in avatar.names()
    assert key not in logs_as_cli.text  # the endpoint echoed it: Pipecat's error lines are masked
    assert "***" in logs_as_cli.text
    assert key not in json.dumps(events)


async def test_llm_emotion_tags_reach_the_face_and_never_the_voice(speech_models: SpeechModels) -> None:
    """An LLM that tags its first sentence (split across tokens) and not its second: the first gets the
    tag's emotion, the second its words' (the fallback); no tag is spoken or shown in the transcript."""
    from engines.expression.tags import tag_instruction

    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    async with FakeChatServer() as server:
        server.first = ["[sa", "d]", " I", " am", " so", " sorry", ".", " Your", " flight"]
        server.rest = [" was", " cancelled", " and", " the", " bags", " are", " lost", "."]
        server.release.set()
        settings = Settings(brain="openai", llm_url=server.url, llm_model="m", system_prompt="Be kind.")
        conversation = Conversation(settings, avatar, record(events), models=speech_models)
        async with running(conversation):
            await conversation.send_text("How was my trip?")
            await avatar.wait_for(lambda: avatar.names().count("end_utterance") >= 1)
            await avatar.wait_for(lambda: sum(e is not None for e in avatar.emotions) >= 2)

    assert tag_instruction() in server.requests[0]["body"]["messages"][0]["content"]
    cues = [c for c in avatar.emotions if c is not None]
    assert [(c.name, c.source) for c in cues] == [("sad", "tag"), ("sad", "text")]
    spoken = [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "assistant"]
    assert [normalise(t) for t in spoken] == [
        "i am so sorry",
        "your flight was cancelled and the bags are lost",
    ]
    phonemes = "".join(a.phoneme for _, _, al in avatar.audio for a in (al or ()))
    assert "sˈæd" not in phonemes  # "sad" was never said

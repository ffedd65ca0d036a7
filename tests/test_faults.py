"""Fault injection into the conversation loop: the LLM endpoint, Whisper and Piper fail for one turn.

The loop is the real one (Pipecat pipeline, bundled Whisper/Piper/Silero/Smart
Turn, the real :class:`AvatarStream` taking frame jobs at 25 FPS, nothing
rendered). The faults:

* the LLM: a loopback aiohttp server speaking the OpenAI chat-completions
  streaming API (the fault injected is the server's behaviour: HTTP 500, 401,
  429, a hang before the headers, a stream of keep-alive comments that never
  brings a token, a stream that stalls after its first sentence, an HTML page, invalid JSON chunks, JSON without choices, a
  connection cut mid-stream);
* Whisper and Piper: the shared model object's ``transcribe`` / ``synthesize``
  replaced for one call by one that raises (the seam is the model object that
  :class:`SpeechModels` hands the services; monkeypatch restores it).

Each fault must give one ``error`` event naming the stage, keep the session
running with its frames flowing, speak the fallback line for an LLM fault, and
leave the next turn working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from event_log import record
from speech_helpers import MIC_RATE, WAIT_S, RecordingAvatar, chat_chunk, frames_played, speech_at_48k

from realtime.conversation.loop import Conversation
from realtime.conversation.services import SpeechModels
from realtime.settings import Settings

pytestmark = pytest.mark.slow

TIMEOUT_S = 1.0  # the LLM time budget in these tests
FALLBACK = "Sorry, my mind went blank."
HEALTHY = "All good here."
KEY = "sk-fault-test-secret-789"


# --------------------------------------------------------------------------- doubles and helpers


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FaultyChatServer:
    """A loopback OpenAI-compatible ``/v1/chat/completions``: each request takes the next fault, then healthy."""

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.requests: list[str] = []  # the behaviour each request got
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FaultyChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.5)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # hanging handlers return
        assert self._runner is not None
        await self._runner.cleanup()

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        fault = self.faults.pop(0) if self.faults else "healthy"
        self.requests.append(fault)
        if fault in {"500", "401", "429"}:
            status = int(fault)
            return web.json_response(  # a careless endpoint that echoes the key
                {"error": {"message": f"refused ({request.headers.get('Authorization')})"}},
                status=status,
            )
        if fault == "hang":  # accepts, reads the request and never answers
            await self._closing.wait()
            return web.Response(status=500)
        if fault == "html":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        response = await self._sse(request)
        if fault == "keepalive":  # headers and SSE comments, never a token
            while not self._closing.is_set():
                await response.write(b": keep-alive\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=0.2)
        elif fault == "stall":  # a first sentence, then keep-alive comments and no more tokens
            await response.write(chat_chunk("Let me think."))
            while not self._closing.is_set():
                await response.write(b": keep-alive\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=0.2)
        elif fault == "bad-json":
            await response.write(b"data: {this is not json\n\n")
        elif fault == "no-choices":
            await response.write(b'data: {"object": "chat.completion.chunk", "hello": 1}\n\n')
            await response.write(b"data: [DONE]\n\n")
        elif fault == "cut":  # a few tokens, then the connection drops (no final chunk, no [DONE])
            await response.write(chat_chunk("Well"))
            await response.write(chat_chunk(","))
            assert request.transport is not None
            request.transport.abort()
            return response
        else:
            for token in ["All", " good", " here", "."]:
                await response.write(chat_chunk(token))
            await response.write(chat_chunk(None, "stop"))
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def errors_past(events: list[dict[str, Any]], count: int) -> Callable[[], bool]:
    return lambda: sum(e["type"] == "error" for e in events) > count


def assistant_lines(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "assistant"]


async def turn(
    conversation: Conversation, events: list[dict[str, Any]], avatar: RecordingAvatar, text: str, expect: str
) -> None:
    """Type ``text`` and wait until the avatar has been handed the spoken ``expect`` line."""
    said = len(assistant_lines(events))
    await conversation.send_text(text)
    await wait_until(lambda: expect in assistant_lines(events)[said:], f"the avatar to say {expect!r}")


# --------------------------------------------------------------------------- LLM endpoint faults

LLM_FAULTS = {
    "500": "HTTP 500",
    "401": "HTTP 401",
    "429": "HTTP 429",
    "hang": f"within {TIMEOUT_S:g} s",
    "keepalive": f"within {TIMEOUT_S:g} s",
    "stall": f"within {TIMEOUT_S:g} s",
    "html": "not a valid chat completion stream",
    "bad-json": "not a valid chat completion stream",
    "no-choices": "not a valid chat completion stream",
    "cut": "connection",
}


async def test_llm_faults_are_reported_answered_with_the_fallback_and_the_next_turn_works(
    speech_models: SpeechModels,
) -> None:
    """One session lives through every LLM fault in turn; after each, a healthy turn is answered."""
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    async with FaultyChatServer() as server:
        settings = Settings(
            brain="openai",
            llm_url=server.url,
            llm_model="test-model",
            llm_key=KEY,
            llm_timeout_s=TIMEOUT_S,
            llm_fallback=FALLBACK,
        )
        conversation = Conversation(settings, avatar, record(events), models=speech_models)
        async with frames_played(avatar):
            await conversation.start()
            try:
                for fault, expected in LLM_FAULTS.items():
                    server.faults.append(fault)
                    errors_before = sum(e["type"] == "error" for e in events)
                    chunks_before = len(avatar.audio)
                    # a hang must end by the time budget, well inside turn()'s wait (600 s without it)
                    await turn(conversation, events, avatar, f"Trigger {fault}.", FALLBACK)
                    errors = [e for e in events if e["type"] == "error"][errors_before:]
                    assert len(errors) == 1, (fault, errors)
                    assert errors[0]["stage"] == "llm"
                    assert expected in errors[0]["message"], (fault, errors[0])
                    assert len(avatar.audio) > chunks_before, f"{fault}: the fallback was not spoken"
                    assert conversation.running
                    frame_before = avatar.frame_index
                    await turn(conversation, events, avatar, "Are you there?", HEALTHY)
                    assert avatar.frame_index > frame_before  # the stream kept flowing
            finally:
                await conversation.stop()

    assert server.requests == [r for f in LLM_FAULTS for r in (f, "healthy")]  # no retries
    assert KEY not in json.dumps(events)
    assert all(len(e["message"]) <= 300 for e in events if e["type"] == "error")


# --------------------------------------------------------------------------- Whisper and Piper faults

FRAME = MIC_RATE // 50  # 20 ms


class InjectedFault(RuntimeError):
    """The fault a test injects into a speech model."""


def fail_first(monkeypatch: pytest.MonkeyPatch, obj: object, name: str, times: int = 1) -> list[int]:
    """Make ``obj.name`` raise on its next ``times`` calls (later ones go to the real method); returns a call log."""
    real = getattr(obj, name)
    calls: list[int] = []

    def faulty(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls))
        if len(calls) <= times:
            raise InjectedFault(f"injected {name} fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, faulty)
    return calls


async def speak_into(
    conversation: Conversation, signal: np.ndarray, tail_s: float, until: Callable[[], bool]
) -> None:
    """Play [N] float32 48 kHz ``signal`` as the user's mic in real time, then silence until ``until()``."""
    silence = np.zeros(FRAME, np.float32)
    frames = [
        np.pad(signal[i : i + FRAME], (0, max(0, i + FRAME - signal.size)))
        for i in range(0, signal.size, FRAME)
    ]
    start = time.monotonic()
    k = 0
    deadline = start + signal.size / MIC_RATE + tail_s + WAIT_S
    while k < len(frames) or not until():
        if time.monotonic() > deadline:
            raise AssertionError("timed out feeding the mic")
        frame = frames[k] if k < len(frames) else silence
        await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        await conversation.push_user_audio((frame * 32767).astype(np.int16), MIC_RATE)
        k += 1


async def test_a_whisper_failure_is_reported_and_the_next_spoken_turn_is_heard(
    speech_models: SpeechModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = "Good morning to you."
    speech = speech_at_48k(speech_models, said, lead_s=0.3)
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    conversation = Conversation(Settings(), avatar, record(events), models=speech_models)  # echo brain
    calls = fail_first(monkeypatch, speech_models.stt, "transcribe")
    async with frames_played(avatar):
        await conversation.start()
        try:
            await speak_into(conversation, speech, 0.5, lambda: any(e["type"] == "error" for e in events))
            errors = [e for e in events if e["type"] == "error"]
            assert [e["stage"] for e in errors] == ["stt"]
            assert "injected transcribe fault" in errors[0]["message"]
            assert conversation.running
            frame_before = avatar.frame_index
            await speak_into(conversation, speech, 0.5, lambda: bool(assistant_lines(events)))
            assert avatar.frame_index > frame_before
        finally:
            await conversation.stop()

    assert len(calls) == 2  # the failed segment was not retried, the second one transcribed
    user = [e["text"] for e in events if e["type"] == "transcript" and e["role"] == "user"]
    assert [t.lower().strip(".") for t in user] == [said.lower().strip(".")]
    assert len(avatar.audio) >= 1  # the echo of the second turn reached the avatar
    assert sum(e["type"] == "error" for e in events) == 1


@pytest.mark.parametrize("when", ["on call", "mid-stream"])
async def test_a_piper_failure_is_reported_and_the_next_line_is_spoken(
    speech_models: SpeechModels, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Piper raising when asked (``on call``, 3 lines in a row) or after its first clause (``mid-stream``).

    Three silent lines in a row would make Pipecat write the TTS service off for the session.
    """
    failures = 3 if when == "on call" else 1
    if when == "on call":
        fail_first(monkeypatch, speech_models.tts, "synthesize", times=failures)
    else:
        real = speech_models.tts.synthesize

        def breaks_after_one(text: str, options: Any = None) -> Any:
            chunks = real(text, options)
            yield next(chunks)
            raise InjectedFault("injected synthesize fault")

        monkeypatch.setattr(speech_models.tts, "synthesize", breaks_after_one)
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    conversation = Conversation(Settings(), avatar, record(events), models=speech_models)
    async with frames_played(avatar):
        await conversation.start()
        try:
            for k in range(failures):
                await conversation.say("This line breaks. It never ends.")
                await wait_until(errors_past(events, k), "the TTS error event")
            assert conversation.running
            if when == "mid-stream":
                monkeypatch.undo()
            chunks_before = len(avatar.audio)
            frame_before = avatar.frame_index
            await conversation.say("This one works.")
            await wait_until(lambda: "This one works." in assistant_lines(events), "the next line")
            await wait_until(lambda: len(avatar.audio) > chunks_before, "the next line's audio")
            assert avatar.frame_index > frame_before
        finally:
            await conversation.stop()

    errors = [e for e in events if e["type"] == "error"]
    assert [e["stage"] for e in errors] == ["tts"] * failures  # one event per fault
    assert "injected synthesize fault" in errors[0]["message"]
    assert "It never ends." not in assistant_lines(events)


# --------------------------------------------------------------------------- settings


def test_llm_timeout_and_fallback_come_from_flags_env_and_are_checked() -> None:
    from realtime.cli import build_parser
    from realtime.settings import SettingsError, load_settings

    args = build_parser().parse_args(["serve", "--llm-timeout", "2.5", "--llm-fallback", ""])
    settings = load_settings(flags=vars(args), env={})
    assert settings.llm_timeout_s == 2.5 and settings.llm_fallback == ""
    args = build_parser().parse_args(["bot", "--llm-timeout", "4"])
    assert load_settings(flags=vars(args), env={}).llm_timeout_s == 4.0
    env = {"SPLATCAST_LLM_TIMEOUT_S": "7", "SPLATCAST_LLM_FALLBACK": "One moment."}
    settings = load_settings(env=env)
    assert (settings.llm_timeout_s, settings.llm_fallback) == (7.0, "One moment.")
    defaults = load_settings(env={})
    assert defaults.llm_timeout_s == 15.0 and defaults.llm_fallback.startswith("Sorry")
    for bad in ("0", "-1", "nan", "601", "soon"):
        with pytest.raises(SettingsError, match="llm_timeout_s"):
            load_settings(env={"SPLATCAST_LLM_TIMEOUT_S": bad})


async def test_an_llm_endpoint_that_is_down_gets_the_fallback(speech_models: SpeechModels) -> None:
    """Nothing listens at --llm-url (connection refused): reported, answered with the fallback, still running."""
    import socket

    with socket.socket() as s:  # a free loopback port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    avatar = RecordingAvatar()
    events: list[dict[str, Any]] = []
    settings = Settings(
        brain="openai", llm_url=f"http://127.0.0.1:{port}/v1", llm_model="m", llm_fallback=FALLBACK
    )
    conversation = Conversation(settings, avatar, record(events), models=speech_models)
    async with frames_played(avatar):
        await conversation.start()
        try:
            for attempt in range(2):  # and again: a connection error does not write the brain off
                await turn(conversation, events, avatar, f"Hello {attempt}?", FALLBACK)
            assert conversation.running
        finally:
            await conversation.stop()
    errors = [e for e in events if e["type"] == "error"]
    assert [e["stage"] for e in errors] == ["llm", "llm"]
    assert all("could not be reached" in e["message"] for e in errors), errors
    assert len(avatar.audio) >= 2

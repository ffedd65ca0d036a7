"""The conversation loop of one server session: the Pipecat pipeline from the user's voice to the avatar.

::

    mic audio ─▶ Whisper STT ─▶ user aggregator ─▶ brain ─▶ Piper TTS ─▶ AvatarOutput ─▶ assistant aggregator
    (16 kHz)     (segments,     (Silero VAD,      (echo |   (sentences,   (AvatarStream
                  shared model)  Smart Turn v3,    OpenAI-   alignments)   calls + events)
                                 interruptions)    compat.)

The pipeline is :func:`realtime.conversation.pipeline.build_pipeline` (the one
``splatcast bot`` runs too). Pipecat does the turn-taking: Silero VAD and Smart
Turn v3 (both ONNX files inside pipecat-ai) decide when the user starts and
ends a turn; a user turn that starts while the avatar talks broadcasts an
``InterruptionFrame``, which drops the brain's and the TTS's work in flight and
reaches :class:`realtime.conversation.avatar_output.AvatarOutput`, which calls
``avatar.interrupt()`` (invariant 6).

What is ours: the mic input (:meth:`Conversation.push_user_audio`,
:meth:`Conversation.consume_track`), the echo brain (:mod:`realtime.conversation.brains`),
the shared-model STT/TTS services whose audio frames carry Piper's phoneme
alignments (:mod:`realtime.conversation.services`), and ``AvatarOutput``.

Events (:mod:`realtime.events`, ``on_event(event)`` on the session's loop, for
the websocket; the avatar's own events come from ``AvatarStream.add_listener``):
:class:`~realtime.events.UserSpeaking`, :class:`~realtime.events.Transcript`
(user: the whole turn as the brain gets it; assistant: each sentence once it is
synthesised and handed to the avatar) and :class:`~realtime.events.Error` (a
stage failed for one turn, a short message with secrets masked; the session
goes on, the avatar keeps streaming and the next turn runs normally; a failed
LLM turn also ends with the spoken ``llm_fallback`` line,
:mod:`realtime.conversation.openai_brain`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMMessagesAppendFrame,
    TTSSpeakFrame,
)

from realtime.conversation.avatar_output import AvatarOutput, AvatarSink, EventCallback
from realtime.conversation.brains import make_brain
from realtime.conversation.mic_audio import PIPELINE_SAMPLE_RATE, MicAudioConverter
from realtime.conversation.pipeline import build_pipeline, new_worker
from realtime.conversation.services import SpeechModels
from realtime.events import Error, Event, Stage, Transcript
from realtime.settings import Settings
from realtime.tasks import spawn

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
ERROR_MESSAGE_MAX = 300  # characters of an error event's message


class ConversationError(RuntimeError):
    """The conversation is not running (start it first) or could not start."""


class Conversation:
    """One session's conversation loop: user audio in, avatar calls and events out.

    Example::

        conversation = Conversation(settings, avatar_stream, on_event=send_to_websocket, models=models)
        await conversation.start()
        asyncio.create_task(conversation.consume_track(remote_audio_track))
        await conversation.say("Hello! What shall we talk about?")
        ...
        await conversation.stop()

    ``models`` (:class:`SpeechModels`) is loaded once per process and shared by
    every session; without it the conversation loads its own in ``start()``.
    All methods run on the session's event loop.
    """

    def __init__(
        self,
        settings: Settings,
        avatar: AvatarSink,
        on_event: EventCallback,
        models: SpeechModels | None = None,
    ) -> None:
        self._settings = settings
        self._avatar = avatar
        self._on_event = on_event
        self._models = models
        self._brain = make_brain(settings)  # fails early on bad brain settings
        self._mic = MicAudioConverter(PIPELINE_SAMPLE_RATE)
        self._worker: Any = None
        self._output: AvatarOutput | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._running = False  # the pipeline is ready for frames
        self._stopped = False
        self._stages: dict[int, Stage] = {}  # id(processor) -> stage name for error events

    @property
    def running(self) -> bool:
        return self._running

    def _emit(self, event: Event) -> None:
        if not self._running:
            return
        try:
            self._on_event(event)
        except Exception:  # a broken listener must not break the pipeline
            logger.exception("Conversation: event callback failed for %s", event.type)

    async def _user_turn(self, text: str) -> None:
        self._emit(Transcript(role="user", text=text))

    async def start(self) -> None:
        """Build and start the pipeline; returns once it is ready for audio."""
        if self._run_task is not None:
            raise ConversationError("the conversation was already started")
        from pipecat.workers.runner import WorkerRunner

        if self._models is None:
            self._models = await asyncio.to_thread(SpeechModels.load)
        self._output = AvatarOutput(self._avatar, self._emit, classifier=self._models.text_emotion)
        built = build_pipeline(
            self._settings, self._models, self._output, brain=self._brain, on_user_turn=self._user_turn
        )
        self._stages = built.stages()
        worker = new_worker(built.pipeline, self._models.tts.sample_rate, enable_turn_tracking=False)
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _on_started(_worker: Any, _frame: Frame) -> None:
            started.set()

        @worker.event_handler("on_pipeline_error")
        async def _on_error(_worker: Any, frame: ErrorFrame) -> None:
            self._emit(self._error_event(frame))

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        self._worker = worker
        self._run_task = spawn(runner.run(), "conversation pipeline", self._pipeline_failed)
        waiter = asyncio.create_task(started.wait())
        done, _ = await asyncio.wait(
            {waiter, self._run_task}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            await self.stop()
            raise ConversationError("the conversation pipeline did not start")
        self._running = True
        if self._output is not None:
            self._avatar.add_listener(self._output.on_avatar_event)
        logger.info("Conversation: started (brain %s)", self._settings.brain)

    def _pipeline_failed(self, exc: BaseException) -> None:
        self._emit(
            Error(message=f"the conversation pipeline stopped: {exc}"[:ERROR_MESSAGE_MAX], stage="pipeline")
        )

    def _error_event(self, frame: ErrorFrame) -> Error:
        """The websocket event for a stage's error: which stage, a short message, secrets masked."""
        stage: Stage = self._stages.get(id(frame.processor), "pipeline")
        message = " ".join(str(frame.error).split())
        for secret in (self._settings.llm_key, self._settings.token):
            if secret:  # an endpoint may echo the key back in its error text
                message = message.replace(secret, "***")
        if len(message) > ERROR_MESSAGE_MAX:
            message = message[: ERROR_MESSAGE_MAX - 1] + "…"
        logger.warning("Conversation: %s failed: %s", stage, message)
        return Error(message=message, stage=stage)

    async def stop(self) -> None:
        """Cancel the pipeline and wait for every task it started to end."""
        self._running = False
        self._stopped = True
        if self._output is not None:
            self._avatar.remove_listener(self._output.on_avatar_event)
            await self._output.cancel_broadcasts()
        task, self._run_task = self._run_task, None
        if task is None:
            return
        if self._worker is not None and not task.done():
            await self._worker.cancel(reason="session ended")
        try:
            await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("Conversation: pipeline did not stop in %.0f s; cancelling", STOP_TIMEOUT_S)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Conversation: pipeline ended with an error")
        self._worker = None
        logger.info("Conversation: stopped")

    def _require_running(self) -> Any:
        if not self._running or self._worker is None:
            raise ConversationError("the conversation is not running; call start() first")
        return self._worker

    async def push_user_audio(self, audio: Any, sample_rate: int | None = None, channels: int = 1) -> bool:
        """Feed one frame of the user's microphone; False (audio dropped) while the loop is not running.

        audio: an ``av.AudioFrame`` (from aiortc; its own rate and layout are
        used) or a numpy array ([N] mono, [N*C] interleaved, [C, N] planar;
        int16 or float32) at ``sample_rate``. Resampled to 16 kHz mono.
        """
        if not self._running or self._worker is None:
            return False
        pcm = self._mic.convert(audio, sample_rate, channels)
        if pcm:
            frame = InputAudioRawFrame(audio=pcm, sample_rate=PIPELINE_SAMPLE_RATE, num_channels=1)
            await self._worker.queue_frame(frame)
        return True

    async def consume_track(self, track: Any) -> None:
        """Feed an aiortc audio ``MediaStreamTrack`` until it ends or the conversation stops.

        May start before :meth:`start` has finished: audio that arrives while
        the loop warms up is dropped.
        """
        from aiortc.mediastreams import MediaStreamError

        while not self._stopped:
            try:
                frame = await track.recv()
            except MediaStreamError:
                logger.info("Conversation: the user's audio track ended")
                return
            await self.push_user_audio(frame)

    async def say(self, text: str) -> None:
        """Speak ``text`` (no STT, no brain): straight to TTS and the avatar; interruptible."""
        worker = self._require_running()
        text = text.strip()
        if not text:
            return
        await worker.queue_frame(TTSSpeakFrame(text))

    async def send_text(self, text: str) -> None:
        """The user's typed words: answered by the brain like a spoken turn (interrupts the avatar)."""
        worker = self._require_running()
        text = text.strip()
        if not text:
            return
        self._emit(Transcript(role="user", text=text))
        await worker.queue_frame(InterruptionFrame())
        await worker.queue_frame(LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True))

    async def interrupt(self) -> None:
        """Stop the reply in flight and what the avatar still has to say; the avatar listens."""
        worker = self._require_running()
        await worker.queue_frame(InterruptionFrame())

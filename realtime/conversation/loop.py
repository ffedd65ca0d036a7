"""The conversation loop of one session: a Pipecat pipeline from the user's voice to the avatar.

::

    mic audio ─▶ Whisper STT ─▶ user aggregator ─▶ brain ─▶ Piper TTS ─▶ AvatarOutput ─▶ assistant aggregator
    (16 kHz)     (segments,     (Silero VAD,      (echo |   (sentences,   (AvatarStream
                  shared model)  Smart Turn v3,    OpenAI-   alignments)   calls + events)
                                 interruptions)    compat.)

Pipecat does the turn-taking: Silero VAD and Smart Turn v3 (both ONNX files
inside pipecat-ai) decide when the user starts and ends a turn; a user turn
that starts while the avatar talks broadcasts an ``InterruptionFrame``, which
drops the brain's and the TTS's work in flight and reaches
:class:`AvatarOutput`, which calls ``avatar.interrupt()`` (invariant 6).

What is ours: the mic input (:meth:`Conversation.push_user_audio`,
:meth:`Conversation.consume_track`), the echo brain (:mod:`realtime.conversation.brains`),
the shared-model STT/TTS services whose audio frames carry Piper's phoneme
alignments (:mod:`realtime.conversation.services`), and :class:`AvatarOutput`,
which turns frames into :class:`AvatarSink` calls and events.

Events (``on_event(dict)``, called on the session's loop, for the websocket;
the avatar's own events, ``state`` speaking/listening/idle, ``interrupted``,
``utterance_done``, come from ``AvatarStream.add_listener``):

* ``{"type": "user_speaking", "speaking": bool}``
* ``{"type": "transcript", "role": "user" | "assistant", "text": str}``
  (user: the whole turn as the brain gets it; assistant: each sentence once
  it is synthesised and handed to the avatar)
* ``{"type": "error", "stage": "stt" | "llm" | "tts" | "avatar" | "pipeline", "message": str}``
  a stage failed for one turn (a short message, secrets masked); the session
  goes on, the avatar keeps streaming and the next turn runs normally. A failed
  LLM turn also ends with the spoken ``llm_fallback`` line
  (:mod:`realtime.conversation.openai_brain`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMMessagesAppendFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from realtime.conversation.brains import make_brain
from realtime.conversation.mic_audio import PIPELINE_SAMPLE_RATE, MicAudioConverter
from realtime.conversation.services import (
    AlignedPiperTTSService,
    AlignedTTSAudioRawFrame,
    SharedWhisperSTTService,
    SpeechModels,
)
from realtime.settings import Settings

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
ERROR_MESSAGE_MAX = 300  # characters of an error event's message


class ConversationError(RuntimeError):
    """The conversation is not running (start it first) or could not start."""


class AvatarSink(Protocol):
    """What the conversation needs from the avatar: part of the AvatarStream contract (issue 5)."""

    def push_tts_audio(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Sequence[Any] | None = None,
        reply: str | None = None,
    ) -> None: ...

    def end_utterance(self) -> None: ...

    def interrupt(self) -> None: ...

    def set_user_speaking(self, speaking: bool) -> None: ...

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None: ...

    def remove_listener(self, fn: Callable[[dict[str, Any]], None]) -> None: ...


class AvatarOutput(FrameProcessor):
    """The pipeline's last stage before the assistant aggregator: frames → avatar calls and events.

    * ``TTSAudioRawFrame`` → ``push_tts_audio(pcm int16 [N], rate, alignments)``;
      alignments only from :class:`AlignedTTSAudioRawFrame` (other TTS → None,
      the a2v network path)
    * ``TTSStoppedFrame`` → ``end_utterance()``
    * ``InterruptionFrame`` → ``interrupt()`` (at every user turn start, whatever
      the avatar's state: audio already handed over may still wait to play;
      the avatar reports ``{"type": "interrupted", "had_speech": ...}`` itself)
    * ``UserStarted/StoppedSpeakingFrame`` → ``set_user_speaking(True/False)``
    * ``TTSTextFrame`` → an assistant transcript event

    And back: the avatar's ``state`` events (speaking or not, as its media
    clock plays the audio) become ``BotStarted/StoppedSpeakingFrame`` broadcast
    both ways, as Pipecat's output transports do, so the aggregators know
    whether the avatar is talking (e.g. a noise-only user turn then counts as
    an interruption only while it talks).
    """

    def __init__(self, avatar: AvatarSink, emit: EventCallback, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._avatar = avatar
        self._emit = emit
        self._bot_speaking = False
        self._broadcasts: set[asyncio.Task[None]] = set()

    def on_avatar_event(self, event: dict[str, Any]) -> None:
        """Listener for ``AvatarStream.add_listener`` (called on the session's loop)."""
        if event.get("type") != "state":
            return
        speaking = event.get("state") == "speaking"
        if speaking == self._bot_speaking:
            return
        self._bot_speaking = speaking
        frame_cls = BotStartedSpeakingFrame if speaking else BotStoppedSpeakingFrame
        task = asyncio.get_running_loop().create_task(self.broadcast_frame(frame_cls))
        self._broadcasts.add(task)
        task.add_done_callback(self._broadcasts.discard)

    async def cancel_broadcasts(self) -> None:
        tasks = list(self._broadcasts)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self._handle(frame)
        await self.push_frame(frame, direction)

    def _handle(self, frame: Frame) -> None:
        avatar = self._avatar
        if isinstance(frame, TTSAudioRawFrame):
            pcm = np.frombuffer(frame.audio, dtype=np.int16)  # [N * C]
            if frame.num_channels > 1:
                pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)  # [N]
            alignments = frame.alignments if isinstance(frame, AlignedTTSAudioRawFrame) else None
            try:
                avatar.push_tts_audio(pcm, frame.sample_rate, alignments, reply=frame.context_id)
            except ValueError as exc:  # AvatarStreamError: this chunk is lost, the session goes on
                logger.warning("AvatarOutput: the avatar refused a TTS chunk: %s", exc)
                self._emit(
                    {"type": "error", "stage": "avatar", "message": f"the avatar refused a TTS chunk: {exc}"}
                )
        elif isinstance(frame, TTSStoppedFrame):
            avatar.end_utterance()
        elif isinstance(frame, InterruptionFrame):
            avatar.interrupt()
        elif isinstance(frame, UserStartedSpeakingFrame):
            avatar.set_user_speaking(True)
            self._emit({"type": "user_speaking", "speaking": True})
        elif isinstance(frame, UserStoppedSpeakingFrame):
            avatar.set_user_speaking(False)
            self._emit({"type": "user_speaking", "speaking": False})
        elif isinstance(frame, TTSTextFrame) and frame.text.strip():
            self._emit({"type": "transcript", "role": "assistant", "text": frame.text.strip()})


def make_turn_aggregators() -> Any:
    """A new ``LLMContextAggregatorPair`` with our turn-taking: Silero VAD and Smart Turn v3.

    Both models are the ONNX files inside pipecat-ai (no download); a user turn
    that starts while the bot talks broadcasts an interruption. The context
    starts empty: the system prompt lives on the LLM service
    (:func:`realtime.conversation.brains.make_brain`). One pair per session.
    """
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    from engines.assets import smart_turn

    turn_analyzer = LocalSmartTurnAnalyzerV3(smart_turn_model_path=str(smart_turn()), cpu_count=1)
    return LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(sample_rate=PIPELINE_SAMPLE_RATE),
            user_turn_strategies=UserTurnStrategies(
                stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=turn_analyzer)]
            ),
        ),
    )


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
        self._stages: dict[int, str] = {}  # id(processor) -> stage name for error events

    @property
    def running(self) -> bool:
        return self._running

    def _emit(self, event: dict[str, Any]) -> None:
        if not self._running:
            return
        try:
            self._on_event(event)
        except Exception:  # a broken listener must not break the pipeline
            logger.exception("Conversation: event callback failed for %s", event.get("type"))

    def _build_pipeline(self, models: SpeechModels) -> Any:
        from pipecat.pipeline.pipeline import Pipeline

        aggregators = make_turn_aggregators()
        user_aggregator = aggregators.user()

        @user_aggregator.event_handler("on_user_turn_message_added")
        async def _on_user_message(_aggregator: Any, message: Any) -> None:
            text = (message.content or "").strip()
            if text:
                self._emit({"type": "transcript", "role": "user", "text": text})

        self._output = AvatarOutput(self._avatar, self._emit)
        stt = SharedWhisperSTTService(models.stt)
        tts = AlignedPiperTTSService(models)
        self._stages = {id(stt): "stt", id(self._brain): "llm", id(tts): "tts"}
        pipeline = Pipeline(
            [
                stt,
                user_aggregator,
                self._brain,
                tts,
                self._output,
                aggregators.assistant(),
            ]
        )
        return pipeline

    async def start(self) -> None:
        """Build and start the pipeline; returns once it is ready for audio."""
        if self._run_task is not None:
            raise ConversationError("the conversation was already started")
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.workers.runner import WorkerRunner

        if self._models is None:
            self._models = await asyncio.to_thread(SpeechModels.load)
        pipeline = self._build_pipeline(self._models)
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=PIPELINE_SAMPLE_RATE,
                audio_out_sample_rate=self._models.tts.sample_rate,
            ),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
            enable_rtvi=False,
            enable_turn_tracking=False,
        )
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
        self._run_task = asyncio.create_task(runner.run(), name="conversation-pipeline")
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

    def _error_event(self, frame: ErrorFrame) -> dict[str, Any]:
        """The websocket event for a stage's error: which stage, a short message, secrets masked."""
        stage = self._stages.get(id(frame.processor), "pipeline")
        message = " ".join(str(frame.error).split())
        for secret in (self._settings.llm_key, self._settings.token):
            if secret:  # an endpoint may echo the key back in its error text
                message = message.replace(secret, "***")
        if len(message) > ERROR_MESSAGE_MAX:
            message = message[: ERROR_MESSAGE_MAX - 1] + "…"
        logger.warning("Conversation: %s failed: %s", stage, message)
        return {"type": "error", "stage": stage, "message": message}

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
        self._emit({"type": "transcript", "role": "user", "text": text})
        await worker.queue_frame(InterruptionFrame())
        await worker.queue_frame(LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True))

    async def interrupt(self) -> None:
        """Stop the reply in flight and what the avatar still has to say; the avatar listens."""
        worker = self._require_running()
        await worker.queue_frame(InterruptionFrame())

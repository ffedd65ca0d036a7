"""The one conversation pipeline, for ``splatcast serve`` and ``splatcast bot``.

::

    [transport.input] ─▶ Whisper STT ─▶ user turn (Silero VAD, Smart Turn v3) ─▶ brain ─▶ Piper TTS
        ─▶ avatar stage ─▶ [transport.output] ─▶ assistant context

The two differ only in the avatar stage and the transport: a server session
feeds the mic audio in itself and ends in :class:`realtime.conversation.avatar_output.AvatarOutput`
(its AvatarStream is paced by the session); the bot ends in
:class:`realtime.pipecat.service.SplatAvatarService` over a SmallWebRTC transport.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipecat.processors.frame_processor import FrameProcessor

from realtime.conversation.brains import make_brain
from realtime.conversation.mic_audio import PIPELINE_SAMPLE_RATE
from realtime.conversation.pause import PauseListener
from realtime.conversation.services import AlignedPiperTTSService, SharedWhisperSTTService, SpeechModels
from realtime.conversation.turn_models import TurnModels
from realtime.events import Stage
from realtime.settings import Settings

UserTurnHandler = Callable[[str], Awaitable[None]]


def make_turn_aggregators(turn: TurnModels | None = None, pause_listener: PauseListener | None = None) -> Any:
    """A new ``LLMContextAggregatorPair`` with our turn-taking: Silero VAD and Smart Turn v3.

    Both models are the ONNX files inside pipecat-ai (no download), run on
    ``turn``'s sessions (the process's shared ones; None: loaded for this pair
    alone); a user turn that starts while the bot talks broadcasts an
    interruption. The context starts empty: the system prompt lives on the LLM
    service (:func:`realtime.conversation.brains.make_brain`). One pair per pipeline.
    ``pause_listener`` hears the user's pauses (:mod:`realtime.conversation.pause`).
    """
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    models = turn if turn is not None else TurnModels.load()
    return LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=models.vad_analyzer(PIPELINE_SAMPLE_RATE, listener=pause_listener),
            user_turn_strategies=UserTurnStrategies(
                stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=models.turn_analyzer())]
            ),
        ),
    )


@dataclass
class ConversationPipeline:
    """One pipeline and the stages a caller may want to name (e.g. for error events)."""

    pipeline: Any  # pipecat.pipeline.pipeline.Pipeline
    stt: FrameProcessor
    user_aggregator: FrameProcessor
    brain: FrameProcessor
    tts: FrameProcessor

    def stages(self) -> dict[int, Stage]:
        """id(processor) → the stage name of an error event (stt, llm, tts)."""
        return {id(self.stt): "stt", id(self.brain): "llm", id(self.tts): "tts"}


def build_pipeline(
    settings: Settings,
    models: SpeechModels,
    avatar: FrameProcessor,
    transport: Any = None,
    on_user_turn: UserTurnHandler | None = None,
    brain: FrameProcessor | None = None,
) -> ConversationPipeline:
    """STT → turns → brain → Piper → ``avatar`` (→ ``transport.output()``) → assistant context.

    ``transport``: a Pipecat transport whose ``input()`` starts the pipeline and
    whose ``output()`` follows the avatar stage (None: the caller queues the mic
    audio itself). ``on_user_turn(text)`` is called with each user turn as the
    brain gets it. ``brain``: one made already (default: ``make_brain(settings)``).
    """
    from pipecat.pipeline.pipeline import Pipeline

    stt = SharedWhisperSTTService(models.stt, memory=models.stt_memory)
    aggregators = make_turn_aggregators(models.turn, pause_listener=stt)  # Whisper starts at the pause
    user_aggregator = aggregators.user()
    if on_user_turn is not None:
        handler = on_user_turn

        @user_aggregator.event_handler("on_user_turn_message_added")
        async def _on_user_message(_aggregator: Any, message: Any) -> None:
            text = (message.content or "").strip()
            if text:
                await handler(text)

    brain = brain if brain is not None else make_brain(settings)
    tts = AlignedPiperTTSService(models)
    stages: list[Any] = [stt, user_aggregator, brain, tts, avatar]
    if transport is not None:
        stages = [transport.input(), *stages, transport.output()]
    pipeline = Pipeline([*stages, aggregators.assistant()])
    return ConversationPipeline(pipeline, stt, user_aggregator, brain, tts)


def new_worker(pipeline: Any, audio_out_sample_rate: int, **params: Any) -> Any:
    """A ``PipelineWorker`` as both shells run it: 16 kHz in, no idle timeout, no RTVI."""
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker

    return PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=PIPELINE_SAMPLE_RATE, audio_out_sample_rate=audio_out_sample_rate
        ),
        idle_timeout_secs=None,
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
        **params,
    )

"""From Pipecat frames to the avatar: the one TTS → AvatarStream adapter, and the session's last stage.

:func:`feed_tts_audio` is how every TTS frame reaches an
:class:`realtime.media.stream.AvatarStream`, in a server session
(:class:`AvatarOutput`) and in the Pipecat service
(:class:`realtime.pipecat.service.SplatAvatarService`) alike: PCM from the
frame's bytes, Piper's alignments when the frame carries them
(:class:`realtime.conversation.services.AlignedTTSAudioRawFrame`; any other
TTS goes through the a2v network), and the frame's ``context_id`` as the reply
id, so that after an interrupt the late chunks of the interrupted reply are
refused (the reply-id guard lives in the stream).

:class:`EmotionFeed` gives each sentence its emotion before it is spoken,
whatever the TTS: Pipecat's TTS services announce every sentence
(``AggregatedTextFrame`` with ``will_be_spoken``) right before its audio, so
the announced text (tags stripped, else its words classified) becomes the
emotion of the next audio frame; our Piper frames carry their own, exact per
sentence even inside a long text (:class:`realtime.conversation.services.AlignedTTSAudioRawFrame`),
and those win.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from pipecat.frames.frames import (
    AggregatedTextFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from engines.expression.annotate import annotate
from engines.expression.emotions import EmotionCue
from engines.expression.stress import ChunkEmphasis
from engines.expression.tags import split_tags
from engines.expression.text_emotion import ReplyEmotion, TextEmotionClassifier
from realtime.conversation.services import AlignedTTSAudioRawFrame
from realtime.events import Error, Event, StateChanged, Transcript, UserSpeaking
from realtime.tasks import watch

logger = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]


class AvatarSink(Protocol):
    """What the conversation needs from the avatar: part of :class:`realtime.media.stream.AvatarStream`."""

    def push_tts_audio(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Sequence[Any] | None = ...,
        reply: str | None = ...,
        emotion: EmotionCue | None = ...,
        emphasis: ChunkEmphasis | None = ...,
    ) -> bool: ...

    def end_utterance(self) -> None: ...

    def user_pause(self) -> None: ...

    def interrupt(self) -> None: ...

    def set_user_speaking(self, speaking: bool) -> None: ...

    def add_listener(self, fn: EventCallback) -> None: ...

    def remove_listener(self, fn: EventCallback) -> None: ...


def feed_tts_audio(avatar: AvatarSink, frame: TTSAudioRawFrame, emotion: EmotionCue | None = None) -> bool:
    """Hand one TTS frame to the avatar; False when it was refused as late audio of an interrupted reply.

    ``emotion``: the emotion of the sentence this frame starts (:meth:`EmotionFeed.cue_for`).

    Raises ``ValueError`` (``AvatarStreamError``) on audio the stream cannot use; that chunk is lost and
    the stream goes on.
    """
    pcm = np.frombuffer(frame.audio, dtype=np.int16)  # [N * C]
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels)  # [N, C]: the stream mixes to mono
    if isinstance(frame, AlignedTTSAudioRawFrame):
        return avatar.push_tts_audio(
            pcm,
            frame.sample_rate,
            frame.alignments,
            reply=frame.context_id,
            emotion=emotion,
            emphasis=frame.emphasis,
        )
    return avatar.push_tts_audio(pcm, frame.sample_rate, None, reply=frame.context_id, emotion=emotion)


class EmotionFeed:
    """Each sentence's emotion for the avatar, before it is spoken, from any Pipecat TTS (module docstring)."""

    def __init__(self, classifier: TextEmotionClassifier | None = None) -> None:
        self._reply = ReplyEmotion(classifier or TextEmotionClassifier())
        self._context: str | None = None
        self._pending: EmotionCue | None = None

    def announce(self, frame: AggregatedTextFrame) -> None:
        """A sentence the TTS is about to speak: its emotion waits for the sentence's first audio."""
        if not frame.will_be_spoken or not frame.text.strip():
            return
        if frame.context_id != self._context:  # a new reply: a fresh mood
            self._context = frame.context_id
            self._reply.reset()
        _, sentences = annotate(frame.text, self._reply)
        self._pending = sentences[0].cue if sentences else None

    def cue_for(self, frame: TTSAudioRawFrame) -> EmotionCue | None:
        """The emotion that goes with this audio frame (None: no sentence starts here)."""
        if isinstance(frame, AlignedTTSAudioRawFrame) and frame.emotion is not None:
            self._pending = None  # our Piper knows its sentences exactly
            return frame.emotion
        cue, self._pending = self._pending, None
        return cue

    def reset(self) -> None:
        """An interrupt: announced sentences will not be spoken."""
        self._pending = None


class AvatarOutput(FrameProcessor):
    """A server session's last stage before the assistant aggregator: frames → avatar calls and events.

    * ``TTSAudioRawFrame`` → :func:`feed_tts_audio`, with its sentence's emotion (:class:`EmotionFeed`)
    * ``TTSStoppedFrame`` → ``end_utterance()``
    * ``InterruptionFrame`` → ``interrupt()`` (at every user turn start, whatever
      the avatar's state: audio already handed over may still wait to play;
      the avatar reports :class:`realtime.events.Interrupted` itself)
    * ``UserStarted/StoppedSpeakingFrame`` → ``set_user_speaking(True/False)``
    * ``VADUserStoppedSpeakingFrame`` inside the user's turn → ``user_pause()`` (a backchannel nod, maybe)
    * ``TTSTextFrame`` → an assistant :class:`realtime.events.Transcript` (emotion tags removed)

    And back: the avatar's :class:`realtime.events.StateChanged` events (speaking
    or not, as its media clock plays the audio) become
    ``BotStarted/StoppedSpeakingFrame`` broadcast both ways, as Pipecat's output
    transports do, so the aggregators know whether the avatar is talking (e.g. a
    noise-only user turn then counts as an interruption only while it talks).
    """

    def __init__(
        self,
        avatar: AvatarSink,
        emit: EventCallback,
        classifier: TextEmotionClassifier | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._avatar = avatar
        self._emit = emit
        self._emotions = EmotionFeed(classifier)
        self._user_speaking = False
        self._bot_speaking = False
        self._broadcasts: set[asyncio.Task[None]] = set()

    def on_avatar_event(self, event: Event) -> None:
        """Listener for ``AvatarStream.add_listener`` (called on the session's loop)."""
        if not isinstance(event, StateChanged):
            return
        speaking = event.state == "speaking"
        if speaking == self._bot_speaking:
            return
        self._bot_speaking = speaking
        frame_cls = BotStartedSpeakingFrame if speaking else BotStoppedSpeakingFrame
        task = asyncio.get_running_loop().create_task(self.broadcast_frame(frame_cls))
        watch(task, f"{self}: {frame_cls.__name__} broadcast")
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
            try:
                feed_tts_audio(avatar, frame, self._emotions.cue_for(frame))
            except ValueError as exc:  # AvatarStreamError: this chunk is lost, the session goes on
                logger.warning("AvatarOutput: the avatar refused a TTS chunk: %s", exc)
                self._emit(Error(message=f"the avatar refused a TTS chunk: {exc}", stage="avatar"))
        elif isinstance(frame, TTSStoppedFrame):
            avatar.end_utterance()
        elif isinstance(frame, InterruptionFrame):
            self._emotions.reset()
            avatar.interrupt()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_speaking = True
            avatar.set_user_speaking(True)
            self._emit(UserSpeaking(speaking=True))
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._user_speaking = False
            avatar.set_user_speaking(False)
            self._emit(UserSpeaking(speaking=False))
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._user_speaking:
            avatar.user_pause()
        elif isinstance(frame, TTSTextFrame):
            text = split_tags(frame.text)[0].strip()
            if text:
                self._emit(Transcript(role="assistant", text=text))
        elif isinstance(frame, AggregatedTextFrame):
            self._emotions.announce(frame)

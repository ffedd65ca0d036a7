"""Pipecat services around our shared speech models: Whisper STT and Piper TTS with alignments.

Pipecat's own ``WhisperSTTService`` loads its model in its constructor (one
copy per session) and ``PiperTTSService`` downloads voices and drops Piper's
phoneme alignments. These two subclasses of Pipecat's base services do the
same jobs with models loaded once per process (:class:`SpeechModels`) and keep
the alignments:

* :class:`AlignedTTSAudioRawFrame` is a ``TTSAudioRawFrame`` with one more
  field, ``alignments``: the phonemes of exactly this chunk of audio, their
  ``num_samples`` summing to the frame's ``num_frames``. Every Pipecat
  processor treats it as ordinary TTS audio; the avatar sink reads the field.
  One frame carries one Piper chunk (a clause, :meth:`engines.tts.PiperTTS.stream`)
  at Piper's own rate (22 050 Hz), so the alignments stay exact (no
  resampling, no re-chunking). The first chunk of each sentence also carries
  ``emotion``, the sentence's :class:`engines.expression.emotions.EmotionCue`:
  its LLM tag (``[happy]``, removed from the text before synthesis, so it is
  never spoken) or, without one, what its words say
  (:mod:`engines.expression.text_emotion`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import numpy as np
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from engines.expression.annotate import annotate
from engines.expression.emotions import EmotionCue
from engines.expression.stress import ChunkEmphasis, chunk_emphasis
from engines.expression.text_emotion import ReplyEmotion, TextEmotionClassifier
from engines.stt import SAMPLE_RATE as STT_SAMPLE_RATE
from engines.stt import WhisperSTT
from engines.tts import FIRST_MAX_WORDS, Alignment, PiperTTS, SpeechChunk, SynthesisOptions
from engines.voices import Voice
from realtime.conversation.first_words import FirstWordsAggregator
from realtime.conversation.turn_models import TurnModels
from realtime.media.cpu_priority import background_thread, built_in_foreground

logger = logging.getLogger(__name__)

STT_P99_S = 2.0


@dataclass
class AlignedTTSAudioRawFrame(TTSAudioRawFrame):
    """TTS audio (16-bit mono PCM) with the phoneme alignments that cover it exactly."""

    alignments: tuple[Alignment, ...] = field(default=())
    emotion: EmotionCue | None = None  # set on the first chunk of each sentence
    emphasis: ChunkEmphasis | None = None  # its stress beats and pauses, worked out in the TTS thread


@dataclass
class SpeechModels:
    """The speech models one process shares between its sessions (load once, pass to each)."""

    stt: WhisperSTT
    tts: PiperTTS
    text_emotion: TextEmotionClassifier = field(default_factory=TextEmotionClassifier)  # read-only, shared
    # espeak-ng (Piper's phonemizer) keeps global state in C: one synthesis at a time.
    tts_lock: threading.Lock = field(default_factory=threading.Lock)
    # Silero VAD and Smart Turn, shared by every pipeline (None: each pipeline loads its own)
    turn: TurnModels | None = None
    # told the CPU time (ms) of each synthesised chunk, Piper and its prosody, on the TTS thread
    # (the server's stage tts_cpu; None: not reported)
    tts_cpu: Callable[[float], None] | None = None
    # the block every transcription runs in, given by whoever tuned the process's allocator (the server:
    # realtime.web.memory.heap_allocations keeps Whisper's buffers off fresh mappings); None: none
    stt_memory: Callable[[], AbstractContextManager[None]] | None = None

    @classmethod
    def load(cls, voice: Voice | None = None) -> SpeechModels:
        """Load the bundled Whisper tiny.en and a Piper voice (default: the bundled one; offline, ~2.5 s).

        Piper runs on one onnxruntime thread without spin-waiting: beside the render threads it
        synthesised a clause in 220 ms median (p90 320-340) against 320-345 ms (p90 450-570) with
        onnxruntime's default spinning threads (2-core box, interleaved A/B, load 3.5-3.8).

        Whisper runs on one CTranslate2 thread, made at load at the foreground priority
        (:func:`realtime.media.cpu_priority.built_in_foreground`): the user waits for every
        transcript, while the call's event loop, encoders and render workers share the same two
        cores. One thread, because it keeps ~90 % of a core at that priority and the event loop
        must keep the other; two threads were no faster even alone (216 vs 219 ms per bench sentence).
        """
        return cls(
            stt=built_in_foreground(_load_whisper),
            tts=load_voice(voice),
            text_emotion=TextEmotionClassifier().load(),
            turn=TurnModels.load(),
        )

    def with_voice(self, tts: PiperTTS) -> SpeechModels:
        """The same models speaking with another voice (Whisper and the synthesis lock stay shared)."""
        return replace(self, tts=tts)


def _load_whisper() -> WhisperSTT:
    return WhisperSTT.load(cpu_threads=1)


def load_voice(voice: Voice | None) -> PiperTTS:
    """A Piper voice on one thread (None: the bundled voice)."""
    if voice is None:
        return PiperTTS.load(threads=1)
    return PiperTTS.load(voice.model, voice.config, threads=1)


class SharedWhisperSTTService(SegmentedSTTService):
    """Pipecat segmented STT (one transcript per VAD segment) on a shared :class:`WhisperSTT`.

    It also listens for the user's pauses (:class:`realtime.conversation.pause.PauseSileroVAD`):
    at a pause it starts Whisper on the speech so far, and when the VAD's stop follows that pause
    the segment's transcript is that one (the audio after the pause is the VAD's own stop silence),
    ready ~0.1 s sooner; speech that resumes drops it and the segment is transcribed as usual.
    """

    def __init__(
        self,
        stt: WhisperSTT,
        memory: Callable[[], AbstractContextManager[None]] | None = None,
        **kwargs: object,
    ) -> None:
        """``memory``: the block each transcription runs in (:attr:`SpeechModels.stt_memory`)."""
        super().__init__(
            sample_rate=STT_SAMPLE_RATE,
            # speech end → transcript on a busy 2-core CPU (bench conversation): the turn waits this long
            # for a transcript before it closes without one (noise that Whisper hears as nothing)
            ttfs_p99_latency=STT_P99_S,
            settings=STTSettings(model="whisper-tiny.en", language=Language.EN),
            **kwargs,  # type: ignore[arg-type]
        )
        self._stt = stt
        self._memory = memory or contextlib.nullcontext
        self._early: asyncio.Task[str] | None = None  # Whisper on the speech before the current pause
        self._dropped: set[asyncio.Task[str]] = set()  # early transcripts speech made stale, still running
        self.early_transcripts = 0  # segments whose transcript was started at the pause (tests, logs)

    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw 16-bit PCM, as Whisper reads it

    def language_to_service_language(self, language: Language) -> str | None:
        return "en"

    def user_paused(self) -> None:
        """The VAD heard a pause in the user's speech: transcribe what they said so far."""
        if not self._user_speaking or self._early is not None or not self.is_usable:
            return
        pcm = bytes(self._audio_buffer) + self._trailing_silence()
        self._early = asyncio.get_running_loop().create_task(self._transcribe(pcm))

    def user_resumed(self) -> None:
        """The pause ended in speech: the early transcript misses what follows."""
        self._drop_early()

    def _drop_early(self) -> None:
        early, self._early = self._early, None
        if early is not None and not early.done():
            self._dropped.add(early)  # Whisper cannot be stopped mid-run: let it end unheard
            early.add_done_callback(self._dropped.discard)

    async def _handle_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        self._drop_early()
        await super()._handle_user_started_speaking(frame)

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        early, self._early = self._early, None
        if early is None or not self.is_usable:
            await super()._handle_user_stopped_speaking(frame)
            return
        self._user_speaking = False
        pcm = bytes(self._audio_buffer) + self._trailing_silence()
        self._audio_buffer.clear()
        self._record_stt_audio_usage(pcm)  # what the segment was, as the base class reports it
        await self.emit_stt_usage_metrics()
        self.early_transcripts += 1
        await self._segment_queue.put(early)  # type: ignore[arg-type]  # run_stt awaits it in turn

    async def run_stt(self, audio: bytes | asyncio.Task[str]) -> AsyncGenerator[Frame, None]:
        try:
            if isinstance(audio, asyncio.Task):
                text = await audio
            else:
                text = await self._transcribe(audio)
        except Exception as exc:  # a failed segment must not end the session
            logger.exception("SharedWhisperSTTService: transcription failed")
            yield ErrorFrame(error=f"transcription failed: {exc}")
            return
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)

    async def _transcribe(self, audio: bytes) -> str:
        pcm = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0  # [N] 16 kHz
        return await asyncio.to_thread(_transcribe_first, self._stt, pcm, self._memory)


def _transcribe_first(
    stt: WhisperSTT,
    pcm: np.ndarray,
    memory: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> str:
    """Whisper (on its own thread at the foreground priority: :meth:`SpeechModels.load`). The render
    threads of the live calls keep their priority: stepped back to nice +10 meanwhile, they lost 1-3
    frames in most turns of a 512 px call (``bench conversation --call``, in the ~110 ms when Smart Turn's
    decision, also raised then, held the other core) for a transcript ~35 ms sooner (realtime.media.cpu_priority)."""
    with memory():
        return stt.transcribe(pcm)


def _next_chunk(chunks: Iterator[SpeechChunk], lock: threading.Lock) -> SpeechChunk | None:
    with lock:
        return next(chunks, None)


def _next_chunk_with_emphasis(
    chunks: Iterator[SpeechChunk],
    lock: threading.Lock,
    report: Callable[[float], None] | None = None,
    ahead: bool = False,
) -> tuple[SpeechChunk, ChunkEmphasis] | None:
    """The next chunk and its emphasis (prosody + stress beats), both in the TTS worker thread;
    ``report(ms)`` is told this thread's CPU time for them (waiting for ``lock`` costs none).
    ``ahead``: the chunk will play after audio already made, so it is made in the background
    (:func:`realtime.media.cpu_priority.background_thread`): the calls' frames due meanwhile go first."""
    start = time.thread_time()
    with background_thread() if ahead else contextlib.nullcontext():
        chunk = _next_chunk(chunks, lock)
        if chunk is None:
            return None
        emphasis = chunk_emphasis(chunk.pcm, chunk.sample_rate, chunk.alignments)
    if report is not None:
        report((time.thread_time() - start) * 1000.0)
    return chunk, emphasis


class AlignedPiperTTSService(TTSService):
    """Pipecat TTS on a shared :class:`PiperTTS`: one :class:`AlignedTTSAudioRawFrame` per clause.

    An LLM's streamed reply reaches :meth:`run_tts` first piece by first piece:
    its first words as soon as they are in (:class:`FirstWordsAggregator`),
    then sentence by sentence as Pipecat aggregates them, so the avatar speaks
    while the rest is still being generated. Within a text, :meth:`PiperTTS.stream`
    synthesises clause by clause; the first text of a reply (a new
    ``context_id``: a ``say()`` or the first sentence of an LLM turn) starts
    with a short piece (at most ``FIRST_MAX_WORDS`` words), decoded in windows,
    so its first audio is ready after the piece's latent and one decoder window
    (~0.4 s of audio) rather than the whole piece's synthesis. Later sentences of the
    same reply are synthesised while earlier ones play and are not cut short. Every
    chunk after a reply's first is made in the background (nice +5 for its
    synthesis): the calls' frames due meanwhile take the cores first.
    """

    def __init__(
        self, models: SpeechModels, options: SynthesisOptions | None = None, **kwargs: object
    ) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=models.tts.sample_rate,
            settings=TTSSettings(model="piper", voice="en_US-joe-medium", language=None),
            # Pipecat writes a TTS off after 3 silent contexts in a row (meant for a remote voice that
            # stays mute); a local Piper that failed 3 times must still speak the 4th reply.
            max_consecutive_zero_audio_contexts=0,
            **kwargs,  # type: ignore[arg-type]
        )
        # an LLM's reply: its first piece goes to Piper as soon as its words are in, then sentences
        self._text_aggregator = FirstWordsAggregator(  # type: ignore[assignment]
            FIRST_MAX_WORDS, language=self._text_aggregator.language
        )
        self._models = models
        self._options = options
        self._failed_contexts: set[str] = set()  # contexts whose synthesis failed (already reported)
        self._last_context: str | None = None  # the reply run_tts spoke last (a new one starts short)
        self._reply_emotion = ReplyEmotion(models.text_emotion)  # the mood of the reply being spoken

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        first_of_reply = context_id != self._last_context
        self._last_context = context_id
        if first_of_reply:
            self._reply_emotion.reset()
        continues = isinstance(
            self._text_aggregator, FirstWordsAggregator
        ) and self._text_aggregator.continues(text)
        clean, sentences = annotate(text, self._reply_emotion, continues=continues)
        if not clean:  # nothing but emotion tags: nothing to say
            await self.remove_audio_context(context_id)
            return
        chunks = self._models.tts.stream(
            clean,
            self._options,
            first_max_words=FIRST_MAX_WORDS if first_of_reply else None,
            trim_lead=first_of_reply,
        )
        yielded_audio = False
        piece: tuple[int, int] | None = None
        try:
            while True:
                got = await asyncio.to_thread(
                    _next_chunk_with_emphasis,
                    chunks,
                    self._models.tts_lock,
                    self._models.tts_cpu,
                    ahead=yielded_audio or not first_of_reply,
                )
                if got is None:
                    break
                chunk, emphasis = got
                emotion = None
                if chunk.words != piece:  # the first chunk of a piece: does a sentence start in it?
                    piece = chunk.words
                    if sentences and piece is not None and sentences[0].word < piece[1]:
                        emotion = sentences.pop(0).cue
                # rounded, not truncated: truncation turned samples just above SILENCE_LEVEL into silence
                pcm16 = np.rint(np.clip(chunk.pcm, -1.0, 1.0) * 32767.0).astype(np.int16)  # [N]
                await self.stop_ttfb_metrics()
                yield AlignedTTSAudioRawFrame(
                    audio=pcm16.tobytes(),
                    sample_rate=chunk.sample_rate,
                    num_channels=1,
                    context_id=context_id,
                    alignments=chunk.alignments,
                    emotion=emotion,
                    emphasis=emphasis,
                )
                yielded_audio = True
        except Exception as exc:  # a failed sentence must not end the session
            logger.exception("AlignedPiperTTSService: synthesis failed for %r", text[:60])
            self._failed_contexts.add(context_id)
            yield ErrorFrame(error=f"speech synthesis failed: {exc}")
            if not yielded_audio:
                # Pipecat closes a context whose run_tts yielded audio; one that yielded none would hold
                # the playback queue for stop_frame_timeout_s (3 s) and delay the next line: close it now.
                await self.remove_audio_context(context_id)

    async def _record_context_audio_outcome(self, context_id: str, received_audio: bool) -> None:
        # Pipecat reports a context that ends without audio as an error of its own; for a context
        # whose synthesis failed that would be a second error event for one fault.
        if context_id in self._failed_contexts:
            self._failed_contexts.discard(context_id)
            return
        await super()._record_context_audio_outcome(context_id, received_audio)

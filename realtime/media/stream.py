"""AvatarStream: one session's media logic, on one media clock where audio is master.

TTS audio chunks (any sample rate, optionally with phoneme alignments) and
events (interrupt, user speaking, emotion) go in; :meth:`AvatarStream.next_frame_job`
hands out, frame after frame, what video frame ``k`` must show (rig
parameters) together with exactly the audio for media time
``[k/fps, (k+1)/fps)`` at 48 kHz. The stream never ends: when nothing is said
the jobs carry idle motion and silence.

This class owns no clock and never sleeps. Whoever drives it decides when a
job is rendered and when its audio and image leave: the real-time
:class:`realtime.media.pacer.FrameClock` (WebRTC), the offline renderer of
``splatcast say`` (as fast as it can) and the Pipecat video service all use this
one class. Video pts derive from the audio sample clock
(``samples * 90000 / sample_rate``), never from a frame counter at a nominal fps.

Lip sync: when a chunk comes with alignments (our Piper path) the mouth comes
straight from them (:class:`engines.a2v.visemes.AlignmentTrack`, zero
lookahead); otherwise the a2v network streams over the audio. An utterance
starts playing only once its first lip frame is known, so the added latency is
the network's lookahead at most, and once it plays its audio never stalls.

Expression (``expressiveness`` > 0, issue 17): each utterance's audio also
goes through a streaming prosody tracker (:mod:`engines.expression.prosody`)
within the same lookahead; its pitch accents (a2v path) or the stress marks
it ranks (alignment path, :mod:`engines.expression.stress`) become emphasis
beats, and its phrase ends blink chances, in the motion layers. A chunk may
carry the :class:`engines.expression.emotions.EmotionCue` of its sentence: it
is applied when playback reaches the sentence (a little before, so the
400 ms transition is under way when the first word sounds) unless the API
holds an explicit emotion, which wins while set (:meth:`AvatarStream.set_emotion`,
:meth:`AvatarStream.clear_emotion`). Every cue is reported as an ``emotion``
event when its sentence plays. Between the end of the user's turn and the
first reply audio the face shows a thinking look. At ``expressiveness == 0``
none of this runs and the frames are exactly those of before.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import soxr

from engines.a2v.visemes import (
    A2V_ARKIT_CHANNELS,
    A2V_CHANNELS,
    ARKIT_SLICE,
    JAW_OPEN_INDEX,
    SPEECH_INDEX,
    AlignmentTrack,
)
from engines.expression.emotions import EmotionCue
from engines.expression.prosody import DEFAULT_LOOKAHEAD_S, ProsodyFrame, ProsodyTracker
from engines.expression.stress import PROMINENCE_SPAN, ChunkEmphasis, beat_strength, stressed_syllables
from engines.expression.stress import REFRACTORY_S as BEAT_REFRACTORY_S
from realtime.events import (
    AvatarState,
    EmotionChanged,
    Event,
    Interrupted,
    StateChanged,
    UtteranceDone,
    UtteranceQueued,
    UtteranceStarted,
)
from realtime.media.motion import ExpressionStyle, MotionLayers, MotionStyle, SpeechFrame, expression_style

logger = logging.getLogger(__name__)

OUTPUT_SAMPLE_RATE = 48_000
VIDEO_CLOCK_RATE = 90_000
Listener = Callable[[Event], None]
STRESS_MARK = "ˈ"
EMOTION_LEAD_S = 0.2  # a sentence's emotion starts easing in this long before its first sample
THINKING_MAX_S = 8.0  # the thinking look gives up after this long without a reply
PROSODY_AHEAD = 6  # frames of prosody kept known ahead of playback (stress beats look 3 frames on)
PROSODY_BUDGET = 1.5  # video frames' worth of audio analysed at most per frame played (catches up at 1.5x)


class AvatarStreamError(ValueError):
    """Bad input to an AvatarStream (the stream itself keeps running)."""


class LipStream(Protocol):
    """A streaming audio → a2v-frames source (:meth:`engines.a2v.runtime.A2V.stream`)."""

    def push(self, pcm: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class LipModel(Protocol):
    """What AvatarStream needs from the a2v network (:class:`engines.a2v.runtime.A2V`)."""

    fps: int
    channels: tuple[str, ...]

    def stream(self, sample_rate: int) -> LipStream: ...


@dataclass(frozen=True)
class FrameJob:
    """What video frame ``index`` shows and the audio that leaves with it."""

    index: int  # k
    pts: int  # 90 kHz, from the audio sample clock
    params: np.ndarray  # [C] float32 rig parameters in the avatar's channel order
    audio: np.ndarray  # [samples_per_frame] int16 mono at 48 kHz
    speaking: bool  # an utterance's audio is in this frame
    mouth_open: float  # jawOpen of the lip-sync source (0 when silent), for stats and tests


def _to_float_mono(pcm: np.ndarray) -> np.ndarray:
    """int16 or float audio, mono or [N, channels] → float32 [N] in [-1, 1], non-finite values zeroed."""
    a = np.asarray(pcm)
    if a.ndim == 2:
        a = a.mean(axis=1) if a.shape[1] <= 8 else a.mean(axis=0)
    elif a.ndim != 1:
        raise AvatarStreamError(f"audio must be 1-D (or [N, channels]), got shape {a.shape}")
    if a.dtype == np.int16:
        out = a.astype(np.float32) / 32768.0
    elif np.issubdtype(a.dtype, np.floating):
        out = a.astype(np.float32, copy=True)
        bad = ~np.isfinite(out)
        if bad.any():
            logger.warning("avatar-stream: %d non-finite audio samples replaced by silence", int(bad.sum()))
            out[bad] = 0.0
    else:
        raise AvatarStreamError(f"audio must be int16 or float, got {a.dtype}")
    np.clip(out, -1.0, 1.0, out=out)
    return out


class _Utterance:
    """One reply: its audio at 48 kHz, its lip frames, and where it is in playback."""

    def __init__(
        self,
        fps: int,
        samples_per_frame: int,
        lip_model: LipModel | None,
        aligned: bool,
        reply: str | None,
        expressive: bool = False,
    ) -> None:
        self.reply = reply  # the TTS context (e.g. Pipecat's context_id) this audio belongs to
        self.fps = fps
        self.spf = samples_per_frame
        self.aligned = aligned
        self.audio: deque[np.ndarray] = deque()  # 48 kHz float32 pieces not yet played
        self.buffered = 0  # samples in self.audio
        self.lip: list[np.ndarray] = []  # rows [C_a2v], frame i of the utterance
        self.lip_ready = 0
        self.stress_frames: set[int] = set()
        self.ended = False
        self.started = False
        self.frame = 0  # next utterance-relative frame to play
        self.source_rate: int | None = None
        self._resampler: Any = None
        self.total_samples = 0  # 48 kHz samples received
        self._align = AlignmentTrack(fps) if aligned else None
        self._aligned_total = 0  # source-rate samples the alignment track covers (alignments + silence)
        self._source_samples = 0  # source-rate samples received
        self._lip_model = lip_model
        self._lip_stream: LipStream | None = None
        # expression: prosody of the audio, emphasis beats and phrase ends per frame, emotion cues
        self.expressive = expressive
        self._prosody: ProsodyTracker | None = None
        self._prosody_frames: list[ProsodyFrame] = []
        self._prosody_queue: deque[np.ndarray] = deque()  # audio the tracker has not analysed yet
        self._prosody_flush = False  # the utterance ended: flush the tracker once the queue is empty
        self._candidates: deque[int] = deque()  # alignment path: frames of primary stresses not yet weighed
        self._last_beat = -(10**9)
        self.emphasis: dict[int, float] = {}
        self.phrase_ends: set[int] = set()
        self.cues: list[tuple[int, EmotionCue]] = []  # (utterance frame, cue), in order

    # --- input -----------------------------------------------------------------------------------
    def push(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Sequence[Any] | None,
        emphasis: ChunkEmphasis | None = None,
    ) -> None:
        if self.source_rate is None:
            self.source_rate = sample_rate
            self._resampler = (
                None
                if sample_rate == OUTPUT_SAMPLE_RATE
                else soxr.ResampleStream(sample_rate, OUTPUT_SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            )
            if not self.aligned and self._lip_model is not None:
                self._lip_stream = self._lip_model.stream(sample_rate)
            if self.expressive and emphasis is None:  # else the TTS works emphasis out itself, ahead
                lookahead_ms = getattr(self._lip_model, "lookahead_ms", DEFAULT_LOOKAHEAD_S * 1000.0)
                self._prosody = ProsodyTracker(
                    sample_rate, self.fps, min(float(lookahead_ms) / 1000.0, DEFAULT_LOOKAHEAD_S)
                )
        elif sample_rate != self.source_rate:
            raise AvatarStreamError(
                f"sample rate changed within an utterance ({self.source_rate} → {sample_rate}); "
                "call end_utterance() between replies of different rates"
            )
        self._append_audio(
            pcm if self._resampler is None else self._resampler.resample_chunk(pcm, last=False)
        )
        if self._prosody is not None:
            self._prosody_queue.append(np.asarray(pcm, np.float32))  # analysed a little per frame
        elif self.expressive and emphasis is not None:
            self._add_emphasis(emphasis, sample_rate)
        if self._align is not None:
            self._push_aligned(pcm, sample_rate, alignments)
        elif self._lip_stream is not None:
            self._add_lip(self._lip_stream.push(pcm))
        else:  # no lip model at all: mouth stays closed, audio still plays
            covered = self.total_samples // self.spf
            self._add_lip(np.zeros((covered - self.lip_ready, len(A2V_CHANNELS)), np.float32))
        self._source_samples += len(pcm)

    def _push_aligned(self, pcm: np.ndarray, sample_rate: int, alignments: Sequence[Any] | None) -> None:
        """Alignments may cover more than their chunk (a sentence split into several chunks)."""
        assert self._align is not None
        if alignments:
            self._mark_stress(alignments, sample_rate, start=self._aligned_total)
            if self._prosody is not None:  # weighed by the voice once the tracker reaches them
                start = self._aligned_total
                self._candidates.extend(
                    (start + s.sample) * self.fps // sample_rate
                    for s in stressed_syllables(alignments)
                    if s.primary
                )
            covered = int(sum(int(a.num_samples) for a in alignments))
            self._add_lip(self._align.push(alignments, sample_rate, covered))
            self._aligned_total += covered
        audio_end = self._source_samples + len(pcm)
        if audio_end > self._aligned_total:  # audio no alignment describes: the mouth rests
            self._add_lip(self._align.push_silence(audio_end - self._aligned_total, sample_rate))
            self._aligned_total = audio_end

    def _mark_stress(self, alignments: Sequence[Any], sample_rate: int, start: int) -> None:
        offset = start
        for a in alignments:
            if STRESS_MARK in str(a.phoneme):
                self.stress_frames.add(int(offset / sample_rate * self.fps))
            offset += int(a.num_samples)

    def _add_emphasis(self, emphasis: ChunkEmphasis, sample_rate: int) -> None:
        """Beats and pauses the TTS worked out for this chunk (samples from its start) → our frames."""
        start = self._source_samples
        for sample, strength in emphasis.beats:
            k = (start + sample) * self.fps // sample_rate
            self.emphasis[k] = max(strength, self.emphasis.get(k, 0.0))
        for sample in emphasis.pauses:
            self.phrase_ends.add((start + sample) * self.fps // sample_rate)

    def advance_prosody(self, i: int) -> None:
        """Analyse queued audio until frame ``i + PROSODY_AHEAD`` is known, at most ``PROSODY_BUDGET``
        frames' worth per call (no burst of work when a long chunk arrives), and weigh the stress
        candidates the analysis now covers."""
        tracker = self._prosody
        if tracker is None or self.source_rate is None:
            return
        budget = round(PROSODY_BUDGET * self.source_rate / self.fps)
        while self._prosody_queue and budget > 0 and len(self._prosody_frames) <= i + PROSODY_AHEAD:
            piece = self._prosody_queue.popleft()
            if len(piece) > budget:
                self._prosody_queue.appendleft(piece[budget:])
                piece = piece[:budget]
            budget -= len(piece)
            self._add_prosody(tracker.push(piece))
        if self._prosody_flush and not self._prosody_queue:
            self._prosody_flush = False
            self._add_prosody(tracker.flush())
        known = len(self._prosody_frames)
        done = self.ended and not self._prosody_queue and not self._prosody_flush
        while self._candidates and (self._candidates[0] + PROMINENCE_SPAN < known or done):
            k = self._candidates.popleft()
            if k < i:
                continue  # already played
            strength = beat_strength(self._prosody_frames, k)
            if k - self._last_beat < round(BEAT_REFRACTORY_S * self.fps):
                if strength <= self.emphasis.get(self._last_beat, 1.0) or self._last_beat < i:
                    continue
                self.emphasis.pop(self._last_beat, None)  # a stronger beat close after: it wins
            self.emphasis[k] = strength
            self._last_beat = k

    def _add_prosody(self, frames: list[ProsodyFrame]) -> None:
        for f in frames:
            self._prosody_frames.append(f)
            if f.phrase_end:
                self.phrase_ends.add(f.index)
            if f.accent > 0 and not self.aligned:  # aligned: the stress marks place the beats
                self.emphasis[f.index] = f.accent

    def mark_emotion(self, cue: EmotionCue, sample_rate: int) -> None:
        """The sentence whose audio is pushed next has this emotion (applied a little before it plays)."""
        start = self._source_samples / sample_rate - EMOTION_LEAD_S
        frame = max(self.frame, math.floor(max(0.0, start) * self.fps))
        self.cues.append((frame, cue))

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._prosody_flush = self._prosody is not None
        if self._resampler is not None:
            self._append_audio(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if self._align is not None:
            self._add_lip(self._align.flush())
        elif self._lip_stream is not None:
            self._add_lip(self._lip_stream.flush())
        # the lip track may end a frame short of the audio (rounding): hold its last frame
        need = math.ceil(self.total_samples / self.spf)
        if self.lip and len(self.lip) < need:
            self.lip.extend([self.lip[-1]] * (need - len(self.lip)))
        self.lip_ready = len(self.lip)

    def _append_audio(self, pcm48: np.ndarray) -> None:
        if len(pcm48):
            self.audio.append(np.asarray(pcm48, np.float32))
            self.buffered += len(pcm48)
            self.total_samples += len(pcm48)

    def _add_lip(self, frames: np.ndarray) -> None:
        for row in np.asarray(frames, np.float32).reshape(-1, frames.shape[-1] if frames.ndim == 2 else 1):
            self.lip.append(row)
        self.lip_ready = len(self.lip)

    # --- output ----------------------------------------------------------------------------------
    def can_start(self) -> bool:
        """Playback may start once the first lip frame and its audio are known (or the reply ended)."""
        if self.ended:
            return True
        return self.lip_ready >= 1 and self.buffered >= self.spf

    def take_audio(self) -> tuple[np.ndarray, int]:
        """The next frame's audio (zero-padded) and how many samples were missing (underrun)."""
        out = np.zeros(self.spf, np.float32)
        filled = 0
        while filled < self.spf and self.audio:
            piece = self.audio[0]
            take = min(self.spf - filled, len(piece))
            out[filled : filled + take] = piece[:take]
            filled += take
            if take == len(piece):
                self.audio.popleft()
            else:
                self.audio[0] = piece[take:]
        self.buffered -= filled
        return out, self.spf - filled

    def finished(self) -> bool:
        return self.ended and self.buffered == 0


@dataclass
class StreamStats:
    frames: int = 0
    speaking_frames: int = 0
    utterances: int = 0
    underrun_samples: int = 0  # audio the TTS did not deliver in time (silence was sent instead)
    lip_late_frames: int = 0  # frames whose lip shape was not known yet (the previous one was held)
    interrupts: int = 0
    dropped_chunks: int = 0  # chunks refused as bad input
    extra: dict[str, float] = field(default_factory=dict)


class AvatarStream:
    """Per-session media logic; see the module docstring."""

    def __init__(
        self,
        channels: tuple[str, ...],
        fps: int = 25,
        lip_model: LipModel | None = None,
        sample_rate: int = OUTPUT_SAMPLE_RATE,
        seed: int = 0,
        rest: np.ndarray | None = None,
        style: MotionStyle | None = None,
        expressiveness: float = 0.0,
        expression_style: ExpressionStyle | None = None,
    ) -> None:
        """``rest`` [C]: the avatar's relaxed closed-mouth expression (``Avatar.rest()``); motion and
        speech are added on top of it (zeros: the source photo's own expression). ``style``: the
        person's speaking style for the motion layers (a replica's, see :class:`MotionStyle`).
        ``expressiveness`` 0..1 (0: no inferred emotion or emphasis, the motion of before) and
        ``expression_style`` (from the same speaking style) shape the expressive layer."""
        if fps not in (25, 30):
            raise AvatarStreamError(f"fps must be 25 or 30, got {fps}")
        if sample_rate % fps:
            raise AvatarStreamError(f"sample rate {sample_rate} is not a whole number of samples per frame")
        if lip_model is not None and lip_model.fps != fps:
            raise AvatarStreamError(f"a2v model runs at {lip_model.fps} fps but the stream at {fps}")
        self.channels = tuple(channels)
        self._rest = (
            np.zeros(len(self.channels), np.float32) if rest is None else np.asarray(rest, np.float32)
        )
        if self._rest.shape != (len(self.channels),):
            raise AvatarStreamError(
                f"rest must have one value per channel ({len(self.channels)}), got {self._rest.shape}"
            )
        self.fps = fps
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate // fps
        self._lip_model = lip_model
        self._motion = MotionLayers(
            self.channels,
            fps,
            seed=seed,
            style=style,
            expressiveness=expressiveness,
            expression_style=expression_style,
        )
        self._api_emotion: tuple[str, float] | None = None  # an explicit emotion from the API wins while set
        self._inferred: EmotionCue | None = None  # the last inferred emotion applied
        self._think_until: int | None = None  # frame at which the thinking look gives up
        self._queue: deque[_Utterance] = deque()
        self._open: _Utterance | None = None  # the utterance receiving chunks
        self._k = 0
        self._state: AvatarState = "idle"
        self._user_speaking = False
        self._listeners: list[Listener] = []
        self._last_lip: np.ndarray | None = None
        self._reply: str | None = None  # the reply the last chunk belonged to
        self._cancelled: deque[str] = deque(maxlen=64)  # interrupted replies: their late chunks are dropped
        self.stats = StreamStats()

    @classmethod
    def for_avatar(
        cls,
        avatar: Any,
        fps: int,
        lip_model: LipModel | None = None,
        seed: int = 0,
        expressiveness: float = 0.0,
    ) -> AvatarStream:
        """The one way to make a stream for an avatar (``engines.splat.avatar.Avatar``): its channels,
        motion on top of its closed relaxed face (``avatar.rest()``), its speaking style
        (``metadata["speaking_style"]``) shaping the expressive layer. Sessions, the Pipecat service and
        ``say`` all build their streams here (sessions and the service through ``Engine.new_stream``)."""
        metadata = getattr(avatar, "metadata", None) or {}
        style = MotionStyle.from_metadata(metadata.get("speaking_style"))
        return cls(
            tuple(avatar.channels),
            fps=fps,
            lip_model=lip_model,
            seed=seed,
            rest=avatar.rest(1)[0],
            style=style,
            expressiveness=expressiveness,
            expression_style=expression_style(metadata),
        )

    # --- events in ---------------------------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        """``fn(event)`` for every :mod:`realtime.events` event of this stream (on the caller's thread)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    @property
    def state(self) -> AvatarState:
        return self._state

    @property
    def frame_index(self) -> int:
        """Index of the next frame :meth:`next_frame_job` returns."""
        return self._k

    @property
    def pending_utterances(self) -> int:
        return len(self._queue)

    def push_tts_audio(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Sequence[Any] | None = None,
        reply: str | None = None,
        emotion: EmotionCue | None = None,
        emphasis: ChunkEmphasis | None = None,
    ) -> bool:
        """Add one TTS chunk to the current reply (a new reply starts after :meth:`end_utterance`).

        ``reply`` names the TTS context the chunk belongs to (Pipecat's ``context_id``): after
        :meth:`interrupt`, chunks of an interrupted reply that were still in flight are dropped
        (the reply-id guard); the call then returns False. Bad audio raises :class:`AvatarStreamError`.
        ``emotion``: the emotion of the sentence this chunk starts (see the module docstring);
        ``emphasis``: this chunk's beats and pauses worked out by the TTS (else the stream analyses it).
        """
        if not isinstance(sample_rate, int | np.integer) or not 4_000 <= int(sample_rate) <= 192_000:
            self.stats.dropped_chunks += 1
            raise AvatarStreamError(f"sample rate must be 4000..192000 Hz, got {sample_rate!r}")
        audio = _to_float_mono(pcm)
        if alignments is not None:
            bad = [
                a for a in alignments if not hasattr(a, "phoneme") or int(getattr(a, "num_samples", -1)) < 0
            ]
            if bad:
                self.stats.dropped_chunks += 1
                raise AvatarStreamError("alignments need .phoneme and .num_samples >= 0")
        if not len(audio):
            return True
        if reply is not None and reply in self._cancelled:
            self.stats.dropped_chunks += 1
            return False
        if self._open is not None and reply is not None and self._open.reply not in (None, reply):
            self.end_utterance()  # a new reply begins: the previous one is complete
        self._reply = reply
        if self._open is None:
            self._open = _Utterance(
                self.fps,
                self.samples_per_frame,
                self._lip_model,
                aligned=alignments is not None,
                reply=reply,
                expressive=self._motion.expressiveness > 0.0,
            )
            self._queue.append(self._open)
            # the first TTS audio of a reply is here: the session times it to the reply's first frame
            self._emit(UtteranceQueued(frame=self._k, ahead=len(self._queue) - 1))
        if emotion is not None:
            self._open.mark_emotion(emotion, int(sample_rate))
        self._open.push(audio, int(sample_rate), alignments, emphasis)
        return True

    def end_utterance(self) -> None:
        """All audio of the current reply was pushed."""
        if self._open is not None:
            self._open.end()
            self._open = None

    def interrupt(self) -> None:
        """Drop pending audio and frames now; the mouth relaxes closed; the avatar listens."""
        had_speech = bool(self._queue)
        for reply in {u.reply for u in self._queue} | {self._reply}:
            if reply is not None and reply not in self._cancelled:
                self._cancelled.append(reply)
        self._queue.clear()
        self._open = None
        self._last_lip = None
        self._motion.interrupt(self._k)
        self._stop_thinking()
        self.stats.interrupts += 1
        self._emit(Interrupted(frame=self._k, had_speech=had_speech))
        self._set_state("listening" if self._user_speaking or had_speech else "idle")

    def set_user_speaking(self, speaking: bool) -> None:
        was = self._user_speaking
        self._user_speaking = bool(speaking)
        self._motion.set_listening(self._user_speaking, self._k)
        if self._user_speaking:
            self._stop_thinking()
        elif was and self._state != "speaking" and self._motion.expressiveness > 0.0:
            # the user's turn ended: think until the reply's first audio plays
            self._motion.set_thinking(True, self._k)
            self._think_until = self._k + round(THINKING_MAX_S * self.fps)
        if self._state != "speaking":
            self._set_state("listening" if self._user_speaking else "idle")

    def user_pause(self) -> None:
        """The user paused inside their turn (voice activity stopped): a backchannel nod, maybe."""
        self._motion.user_pause(self._k)

    @property
    def expressiveness(self) -> float:
        return self._motion.expressiveness

    def set_expressiveness(self, expressiveness: float) -> None:
        """0..1 from the next frame on (emphasis follows from the next reply); 0 turns it all off."""
        try:
            self._motion.set_expressiveness(expressiveness)
        except ValueError as exc:
            raise AvatarStreamError(str(exc)) from exc
        if self._motion.expressiveness == 0.0:
            self._stop_thinking()

    def set_emotion(self, name: str, intensity: float = 1.0) -> None:
        """An explicit emotion (the API's): it wins over inferred ones until :meth:`clear_emotion`."""
        if not math.isfinite(intensity) or not 0.0 <= intensity <= 1.0:
            raise AvatarStreamError(f"emotion intensity must be within 0..1, got {intensity}")
        self._motion.set_emotion(name, float(intensity), self._k)  # ValueError on unknown names
        self._api_emotion = (self._motion.emotion, float(intensity))
        self._emit(EmotionChanged(name=name, intensity=intensity, source="api"))

    def clear_emotion(self) -> None:
        """Drop the explicit emotion: inferred emotions apply again (the last one at once, else neutral)."""
        if self._api_emotion is None:
            return
        self._api_emotion = None
        cue = self._inferred
        if cue is not None and self._motion.expressiveness > 0.0:
            self._motion.set_emotion(cue.name, self._scaled(cue), self._k)
        else:
            self._motion.set_emotion("neutral", 1.0, self._k)
        self._emit(EmotionChanged(name="auto", intensity=0.0, source="api"))

    def _scaled(self, cue: EmotionCue) -> float:
        gain = self._motion.expressiveness / 0.6 * self._motion.expression_style.emotion
        return min(1.0, cue.intensity * gain)

    def _apply_cue(self, cue: EmotionCue) -> None:
        applied = self._api_emotion is None and self._motion.expressiveness > 0.0
        self._inferred = cue  # the latest, applied or not: clear_emotion() returns to it
        if applied:
            self._motion.set_emotion(cue.name, self._scaled(cue), self._k - 1)
        self._emit(
            EmotionChanged(
                name=cue.name,
                intensity=round(cue.intensity, 3),
                source=cue.source,  # type: ignore[arg-type]
                valence=round(cue.valence, 3),
                text=cue.text or None,
                applied=applied,
            )
        )

    def _stop_thinking(self, k: int | None = None) -> None:
        self._think_until = None
        if self._motion.thinking:
            self._motion.set_thinking(False, self._k if k is None else k)

    # --- frames out --------------------------------------------------------------------------------
    def next_frame_job(self) -> FrameJob:
        """The next frame's rig parameters and its audio; advances the media clock by one frame."""
        k = self._k
        self._k += 1
        utt = self._current()
        speech: SpeechFrame | None = None
        mouth_open = 0.0
        if utt is None:
            audio = np.zeros(self.samples_per_frame, np.float32)
        else:
            i = utt.frame
            utt.frame += 1
            audio, missing = utt.take_audio()
            if missing and not utt.ended:
                self.stats.underrun_samples += missing
            if i < utt.lip_ready:
                lip = utt.lip[i]
                self._last_lip = lip
            else:
                lip = (
                    self._last_lip if self._last_lip is not None else np.zeros(len(A2V_CHANNELS), np.float32)
                )
                self.stats.lip_late_frames += 1
            rms = float(np.sqrt(np.mean(audio * audio))) if len(audio) else 0.0
            utt.advance_prosody(i)
            while utt.cues and utt.cues[0][0] <= i:
                self._apply_cue(utt.cues.pop(0)[1])
            speech = SpeechFrame(
                mouth={name: float(v) for name, v in zip(A2V_ARKIT_CHANNELS, lip[ARKIT_SLICE], strict=True)},
                activity=float(lip[SPEECH_INDEX]),
                stress=i in utt.stress_frames,
                energy=min(1.0, rms * 4.0),
                emphasis=utt.emphasis.get(i, 0.0),
                phrase_end=i in utt.phrase_ends,
            )
            mouth_open = float(lip[JAW_OPEN_INDEX])
            self.stats.speaking_frames += 1
            if utt.finished():
                self._queue.popleft()
                self.stats.utterances += 1
                self._emit(UtteranceDone(frame=k))
                if not self._queue:
                    self._set_state("listening" if self._user_speaking else "idle")
        if self._think_until is not None and (speech is not None or k >= self._think_until):
            self._stop_thinking(k)  # the reply's first audio plays (or no reply came)
        params = self._rest + self._motion.frame(k, speech)
        self.stats.frames += 1
        # the resampler may ring slightly past full scale: clip, or int16 would wrap around
        pcm16 = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        return FrameJob(
            index=k,
            pts=k * self.samples_per_frame * VIDEO_CLOCK_RATE // self.sample_rate,
            params=params,
            audio=pcm16,
            speaking=speech is not None,
            mouth_open=mouth_open,
        )

    def _current(self) -> _Utterance | None:
        """The utterance that plays in the next frame, starting it when it is ready."""
        while self._queue:
            utt = self._queue[0]
            if utt.started:
                return utt
            if utt.finished() and utt.total_samples == 0:
                self._queue.popleft()
                continue
            if utt.can_start():
                utt.started = True
                self._set_state("speaking")
                self._emit(UtteranceStarted(frame=self._k - 1, aligned=utt.aligned))
                return utt
            return None
        return None

    # --- internals ---------------------------------------------------------------------------------
    def _set_state(self, state: AvatarState) -> None:
        if state != self._state:
            self._state = state
            self._emit(StateChanged(state=state))

    def _emit(self, event: Event) -> None:
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                logger.exception("avatar-stream: event listener failed on %s", event.type)

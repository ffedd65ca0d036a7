"""A local avatar video service for Pipecat: a lip-synced Gaussian-splat face, no hosted service.

Add one processor after your TTS service::

    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                         SplatAvatarService(),            # ← the face
                         transport.output(), assistant_agg])

with ``TransportParams(video_out_enabled=True, video_out_is_live=True,
video_out_width=512, video_out_height=512, video_out_framerate=25)``.

In: ``TTSAudioRawFrame`` from any TTS service at any sample rate (Piper
alignments from :class:`realtime.conversation.services.AlignedTTSAudioRawFrame`
drive the mouth directly; any other audio goes through the a2v network),
``TTSStartedFrame``/``TTSStoppedFrame``, ``InterruptionFrame``,
``UserStartedSpeakingFrame``/``UserStoppedSpeakingFrame`` (the avatar listens),
``EndFrame``/``CancelFrame``. Out: one ``OutputImageRawFrame`` (RGB) per video
frame, with ``pts`` on the audio clock (frame ``k`` at ``k/fps``), and the
audio of each frame at 48 kHz: the TTS audio as ``TTSAudioRawFrame``, silence
between replies as plain ``OutputAudioRawFrame`` (so the transport does not
think the bot speaks). The TTS audio frames are consumed and re-emitted in step
with the frames; ``TTSStartedFrame``/``TTSStoppedFrame`` are held and leave
just before the first and just after the last audio of their reply, so the
transport's bot-speaking events follow what is actually heard.

Who owns time: this service, through the same :class:`realtime.media.pacer.FramePacer`
a server session runs. The :class:`realtime.media.stream.AvatarStream` is
clock-free; the pacer prepares frame ``k`` ahead of ``t0 + k/fps`` (by the
measured render cost, one to three frame periods: :class:`realtime.media.pacer.MeasuredLead`),
renders it in the shared render worker thread (:class:`realtime.media.scheduler.Scheduler`;
numba releases the GIL, the event loop never blocks), and the service pushes
image ``k`` at ``t0 + k/fps`` on that absolute schedule, or the newest image
rendered so far when ``k`` is late (renders are never thrown away, so a slow
machine shows fewer fresh faces instead of none). Idle frames therefore flow
when nobody speaks, and the transport's queues stay about one frame deep, so an
interruption takes effect at once. If the pacer fails, the service reports an
``ErrorFrame`` that marks it unusable (``force_treat_as_permanent``).

Heavy work happens before the pipeline starts: the constructor loads the
avatar and compiles and times the renderer (or, with ``warm=False``, ``await
service.warm_up()`` does it off the event loop), so ``StartFrame`` passes in
milliseconds.

Audio leaves one frame after its image. Pipecat's live video output
(``video_out_is_live``) draws an image either one frame period after it
arrives (on a grid of its own, started by the first image) or, once any frame
has come a period late, as soon as it arrives (its grid never re-forms), while
audio leaves as soon as the transport's audio track takes it. Holding the
audio back one frame keeps the voice behind its image in both modes (never
ahead: receivers synchronise "as sent", and a voice ahead of the lips is what
people notice first); by design it trails by up to two frames. Measured over
SmallWebRTC (``benchmarks/pipecat_sync.py``, per-frame send times) on a shared
2-core box: 19 and 39 ms median (load 4-6); without the hold-back the voice led
its image by 42 ms. Under CPU starvation (load 8-10) Pipecat's SmallWebRTC
audio track (10 ms packets, an executor hop each) falls behind and the voice
trailed by 63 to 232 ms; the service itself hands out each frame's audio
exactly one frame after its image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from av import VideoFrame
from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from engines.a2v.runtime import A2VRuntimeChoice
from engines.library.store import LibraryError
from engines.splat.rasterize import RenderBackend
from realtime.conversation.avatar_output import EmotionFeed, feed_tts_audio
from realtime.events import Event, UtteranceDone, UtteranceStarted
from realtime.media.avatars import resolve_avatar_path
from realtime.media.clock import sleep_until
from realtime.media.engine import Engine
from realtime.media.frame_renderer import FrameRenderer
from realtime.media.pacer import FramePacer, MeasuredLead
from realtime.media.stream import OUTPUT_SAMPLE_RATE, VIDEO_CLOCK_RATE, AvatarStream, FrameJob
from realtime.pipecat.transport import NS_PER_S
from realtime.settings import SettingsError, load_settings
from realtime.tasks import watch

logger = logging.getLogger(__name__)

END_DRAIN_MARGIN_S = 2.0  # EndFrame: how much longer than the queued speech to wait for it to play out


class SplatAvatarError(ValueError):
    """The service cannot be configured as asked (the message says which option)."""


@dataclass
class _Reply:
    """One TTS reply as it passes through: its held start/stop frames and whether it has audio."""

    context_id: str | None
    started: TTSStartedFrame | None = None
    stopped: TTSStoppedFrame | None = None
    has_audio: bool = False


@dataclass
class _Ready:
    """A rendered frame waiting for its time to leave."""

    job: FrameJob
    frame: VideoFrame
    late: bool  # frame ``job.index`` was not rendered in time: ``frame`` is the newest older render
    marks: list[str] = field(default_factory=list)  # AvatarStream events of this frame


@dataclass
class ServiceStats:
    images: int = 0
    late: int = 0  # frames whose own render was not ready in time (the newest older render went out)
    repeated: int = 0  # frames that went out with exactly the previous image
    speech_frames: int = 0
    interrupts: int = 0
    first_audio_to_image_s: list[float] = field(
        default_factory=list
    )  # per reply: TTS audio in → its image out


class SplatAvatarService(AIService):
    """A Pipecat video service that gives a bot a local, lip-synced splat face (see the module docstring).

    Options: ``avatar`` (a ``.safetensors`` avatar or an id from the avatar library,
    ``splatcast avatar list``; default: the bundled one), ``avatars`` (the library
    directory, default ``~/.local/share/splatcast/avatars``),
    ``fps`` (25 or 30), ``size`` (square output in pixels), ``a2v_runtime``
    (``onnx-cpu``, ``onnx-cuda``, ``tensorrt``, ``auto``), ``render_backend``
    (``cpu``, ``torch``, ``reference``), ``emotion`` (a motion-layer emotion
    name held for the whole call; default None: each sentence's own, from the
    text the TTS announces), ``expressiveness`` (0..1, default 0.6: emotion
    from what is said, emphasis beats from the voice's pitch accents, blinks at
    phrase ends, nods at the user's pauses, a thinking look before the reply;
    0: none of it). ``engine`` shares one loaded
    :class:`realtime.media.engine.Engine` (avatar, render worker, a2v) between the
    services of several calls; without it the service loads its own. ``warm``
    (default True): load and warm up in the constructor (blocking); with False,
    ``await warm_up()`` before the pipeline starts.
    """

    def __init__(
        self,
        *,
        avatar: str | Path | None = None,
        avatars: str | Path | None = None,
        fps: int = 25,
        size: int = 512,
        a2v_runtime: A2VRuntimeChoice = "onnx-cpu",
        render_backend: RenderBackend = "cpu",
        emotion: str | None = None,
        emotion_intensity: float = 1.0,
        expressiveness: float | None = None,
        engine: Engine | None = None,
        audio_delay_frames: int = 1,
        seed: int = 0,
        warm: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings=ServiceSettings(model="splatcast"), **kwargs)
        try:  # a path, or an id from the avatar library (`splatcast avatar list`; `avatars`: its directory)
            avatar = resolve_avatar_path(avatar, Path(avatars) if avatars is not None else None)
        except (FileNotFoundError, LibraryError) as exc:
            raise SplatAvatarError(f"avatar {avatar}: {exc} (leave it out for the bundled avatar)") from exc
        if engine is not None:
            self._config = engine.settings
            if engine.settings.fps != fps:
                raise SplatAvatarError(f"the engine runs at {engine.settings.fps} fps, not {fps}")
        else:
            try:
                self._config = load_settings(
                    flags={
                        "avatar": avatar,
                        "fps": fps,
                        "size": size,
                        "a2v_runtime": a2v_runtime,
                        "render_backend": render_backend,
                    },
                    env={},
                )
            except SettingsError as exc:
                raise SplatAvatarError(str(exc)) from exc
        if audio_delay_frames < 0:
            raise SplatAvatarError(f"audio_delay_frames must be >= 0, got {audio_delay_frames}")
        self._fps = fps
        self._size = size
        self._emotion = None if emotion is None else (emotion, float(emotion_intensity))
        e = self._config.expressiveness if expressiveness is None else float(expressiveness)
        if not 0.0 <= e <= 1.0:
            raise SplatAvatarError(f"expressiveness must be within 0..1, got {expressiveness}")
        self._expressiveness = e
        self._emotions = EmotionFeed()
        self._user_speaking = False
        self._engine = engine
        self._own_engine = engine is None
        self._audio_delay = audio_delay_frames
        self._seed = seed
        self._stream: AvatarStream | None = None
        self._renderer: FrameRenderer | None = None  # set by warm-up
        self._lead: MeasuredLead | None = None  # how far ahead frames are prepared (from the render cost)
        self._neutral: VideoFrame | None = None  # shown until the first render is done
        self._jaw: int | None = None  # index of jawOpen in the rig parameters
        self._pacer: FramePacer | None = None
        self._push_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Queue[_Ready] = asyncio.Queue()
        self._marks: defaultdict[int, list[str]] = defaultdict(list)
        self._t0 = 0.0
        self._replies: deque[_Reply] = deque()  # replies handed to the stream, in play order
        self._incoming: _Reply | None = None  # the reply receiving audio now
        self._audio_line: deque[tuple[FrameJob, list[str], _Reply | None]] = deque()  # delayed audio
        self._playing: _Reply | None = None
        self._last_image: tuple[VideoFrame, bytes] | None = None  # the last render pushed, as bytes
        self._drained = asyncio.Event()
        self._first_audio_at: dict[int, float] = {}  # id(reply) → when its first TTS audio came in
        self._interrupted_before = 0  # frames below this index were made before the last interruption
        self._speech_in_s = 0.0  # TTS audio received and not yet pushed out, in seconds
        self.stats = ServiceStats()
        self._register_event_handler("on_pacer_failed")  # (service, exception): no more frames will come
        if warm:
            self._warm_up()

    # --- public ------------------------------------------------------------------------------------
    @property
    def fps(self) -> int:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the images this service pushes."""
        return self._size, self._size

    @property
    def avatar_stream(self) -> AvatarStream | None:
        """The AvatarStream behind the face (None before the pipeline starts)."""
        return self._stream

    def set_emotion(self, name: str, intensity: float = 1.0) -> None:
        """Hold this emotion from now on (a motion-layer emotion name); it wins over inferred ones."""
        self._emotion = (name, float(intensity))
        if self._stream is not None:
            self._stream.set_emotion(name, float(intensity))

    def clear_emotion(self) -> None:
        """Back to each sentence's own emotion (when expressive)."""
        self._emotion = None
        if self._stream is not None:
            self._stream.clear_emotion()

    def set_expressiveness(self, expressiveness: float) -> None:
        """0..1 from now on (0: the face moves as without issue 17's expression)."""
        if self._stream is not None:
            self._stream.set_expressiveness(expressiveness)
        self._expressiveness = float(expressiveness)

    def can_generate_metrics(self) -> bool:
        return True

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def warmed_up(self) -> bool:
        """The avatar is loaded and the renderer compiled and timed: ``StartFrame`` passes at once."""
        return self._renderer is not None

    async def warm_up(self) -> None:
        """Load the avatar (unless an engine was given), compile and time the renderer, off the event loop.

        The constructor does this (blocking) unless ``warm=False``; then await this before the pipeline
        starts, or ``start()`` does it while holding ``StartFrame``.
        """
        await asyncio.to_thread(self._warm_up)

    def _warm_up(self) -> None:
        if self._renderer is not None:
            return
        t = time.perf_counter()
        if self._engine is None:
            self._engine = Engine.load(self._config, warmup=False)
        engine = self._engine
        renderer = FrameRenderer(
            engine.avatar, (self._size, self._size), backend=self._config.render_backend, pixel_format="rgb24"
        )
        renderer.warmup()
        neutral = np.asarray(engine.avatar.neutral(1), np.float32)  # [1, C]
        cost_s, self._neutral = self._measure_render(renderer, neutral)
        self._lead = MeasuredLead(cost_s)
        self._jaw = renderer.channels.index("jawOpen") if "jawOpen" in renderer.channels else None
        self._renderer = renderer
        logger.info(
            "%s: ready in %.1f s (%d px, %d fps); a frame renders in %.0f ms and is prepared %.0f ms ahead",
            self,
            time.perf_counter() - t,
            self._size,
            self._fps,
            cost_s * 1e3,
            self._lead.lead_s(1.0 / self._fps) * 1e3,
        )

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if not self.warmed_up:
            logger.warning(
                "%s: warming up inside StartFrame; construct it with warm=True or await warm_up() first", self
            )
            await self.warm_up()
        assert self._engine is not None
        stream = self._engine.new_stream(seed=self._seed, expressiveness=self._expressiveness)
        stream.add_listener(self._on_stream_event)
        if self._emotion is not None:
            stream.set_emotion(*self._emotion)
        self._stream = stream

    @staticmethod
    def _measure_render(renderer: FrameRenderer, neutral: np.ndarray) -> tuple[float, VideoFrame]:
        """Median seconds of one level-0 frame (render + convert), and the neutral image."""
        times = []
        frame = renderer.to_video_frame(renderer.render(neutral, 0)[0])
        for _ in range(3):
            t = time.perf_counter()
            frame = renderer.to_video_frame(renderer.render(neutral, 0)[0])
            times.append(time.perf_counter() - t)
        return float(np.median(times)), frame

    def _start_clock(self) -> None:
        if self._stream is None or self._pacer is not None:
            return
        assert self._engine is not None and self._renderer is not None
        self._pacer = FramePacer(
            self._stream,
            self._engine.scheduler,
            self._renderer,
            self._on_frame,
            lead=self._lead,
            on_error=self._pacer_failed,
            first_image=self._neutral,
        )
        self._t0 = time.monotonic() + self._pacer.lead
        self._pacer.start(self._t0)
        self._push_task = watch(
            self.create_task(self._push_loop(), name="splatcast-avatar-push"),
            f"{self}: push loop",
            self._pacer_failed,
        )

    def _pacer_failed(self, exc: BaseException) -> None:
        """No more frames would come: an ``ErrorFrame`` that leaves this service unusable (the pipeline
        worker's ``processor_unusable_policy`` decides what follows), and ``on_pacer_failed`` handlers
        (``splatcast bot`` ends the call)."""
        watch(
            self.create_task(self._report_failure(exc), name="splatcast-avatar-error"),
            f"{self}: error report",
        )

    async def _report_failure(self, exc: BaseException) -> None:
        message = f"the avatar's frame pacer stopped: {exc or type(exc).__name__}"
        await self.push_error(
            message, exception=exc if isinstance(exc, Exception) else None, force_treat_as_permanent=True
        )
        await self._call_event_handler("on_pacer_failed", exc)

    @property
    def running(self) -> bool:
        return self._push_task is not None

    async def stop(self, frame: EndFrame) -> None:
        """Graceful end: let the replies already received play out, then stop the frame loop."""
        await super().stop(frame)
        if self._stream is not None and self.running:
            if self._incoming is not None and self._incoming.has_audio:
                self._end_reply(None)
            self._drained.clear()
            self._check_drained()
            budget = self._queued_speech_s() + END_DRAIN_MARGIN_S
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=budget)
            except TimeoutError:
                logger.warning("%s: replies did not play out within %.1f s; ending anyway", self, budget)
            await self._flush_audio_line()
        await self._shutdown()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._shutdown()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._pacer is not None:
            await self._pacer.stop()
            self._pacer = None
        if self._push_task is not None:
            await self.cancel_task(self._push_task)
            self._push_task = None
        if self._own_engine and self._engine is not None:
            self._engine.close()
            self._engine = None
            self._renderer = None

    # --- frames in ---------------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)  # Start/End/Cancel → start()/stop()/cancel()
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_clock()
            return
        if direction != FrameDirection.DOWNSTREAM or self._stream is None:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, TTSAudioRawFrame):
            self._on_tts_audio(frame)
        elif isinstance(frame, TTSStartedFrame):
            await self.start_ttfb_metrics()
            if self._incoming is not None and self._incoming.has_audio:
                self._end_reply(None)  # a reply that never said it stopped
            self._incoming = _Reply(frame.context_id, started=frame)
        elif isinstance(frame, TTSStoppedFrame):
            await self._on_tts_stopped(frame)
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStartedSpeakingFrame | UserStoppedSpeakingFrame):
            self._user_speaking = isinstance(frame, UserStartedSpeakingFrame)
            self._stream.set_user_speaking(self._user_speaking)
            await self.push_frame(frame, direction)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            if self._user_speaking:
                self._stream.user_pause()  # a pause inside the user's turn: a backchannel nod, maybe
            await self.push_frame(frame, direction)
        elif isinstance(frame, AggregatedTextFrame) and not isinstance(frame, TTSTextFrame):
            self._emotions.announce(frame)  # a sentence about to be spoken: its emotion
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _on_tts_audio(self, frame: TTSAudioRawFrame) -> None:
        assert self._stream is not None
        try:
            accepted = feed_tts_audio(self._stream, frame, self._emotions.cue_for(frame))
        except ValueError as exc:  # AvatarStreamError: this chunk is lost, the call goes on
            logger.warning("%s: the avatar refused a TTS chunk: %s", self, exc)
            return
        if not accepted:  # late audio of an interrupted reply
            return
        reply = self._incoming
        if reply is None:  # audio without a TTSStartedFrame: a reply of its own
            reply = self._incoming = _Reply(frame.context_id)
        samples = len(frame.audio) // (2 * max(1, frame.num_channels))
        if not reply.has_audio and samples:
            reply.has_audio = True
            reply.context_id = reply.context_id or frame.context_id
            self._replies.append(reply)
            self._first_audio_at[id(reply)] = time.monotonic()
            self._drained.clear()
        self._speech_in_s += samples / frame.sample_rate

    async def _on_tts_stopped(self, frame: TTSStoppedFrame) -> None:
        reply = self._incoming
        if reply is not None and reply.has_audio:
            self._end_reply(frame)
            return
        # a reply with no audio: nothing to keep in step with
        self._incoming = None
        if reply is not None and reply.started is not None:
            await self.push_frame(reply.started)
        await self.push_frame(frame)

    def _end_reply(self, stopped: TTSStoppedFrame | None) -> None:
        assert self._stream is not None and self._incoming is not None
        self._incoming.stopped = stopped
        self._incoming = None
        self._stream.end_utterance()

    def _interrupt(self) -> None:
        """Drop every reply and the audio not yet out; frames go on (listening)."""
        assert self._stream is not None
        self._stream.interrupt()
        self._emotions.reset()
        self._replies.clear()
        self._incoming = None
        self._playing = None
        self._first_audio_at.clear()
        self._speech_in_s = 0.0
        # audio waiting behind its frame: becomes silence (the frame timeline stays continuous)
        self._audio_line = deque((job, [], None) for job, _, _ in self._audio_line)
        self._interrupted_before = self._stream.frame_index
        self.stats.interrupts += 1
        self._check_drained()

    # --- frames out --------------------------------------------------------------------------------
    def _on_stream_event(self, event: Event) -> None:
        if isinstance(event, UtteranceStarted | UtteranceDone):
            self._marks[event.frame].append(event.type)

    def _on_frame(self, job: FrameJob, frame: VideoFrame, repeated: bool) -> None:
        """The pacer's frame: it leaves at its due time from :meth:`_push_loop`."""
        self._ready.put_nowait(_Ready(job, frame, repeated, self._marks.pop(job.index, [])))

    async def _push_loop(self) -> None:
        """Push frame ``k``'s image at ``t0 + k/fps`` and its audio one frame (``audio_delay_frames``) later."""
        while True:
            ready = await self._ready.get()
            await sleep_until(self._t0 + ready.job.index / self._fps)
            reply = self._reply_for(ready)
            if reply is not None and "utterance_start" in ready.marks:
                heard_at = self._first_audio_at.pop(id(reply), None)
                if heard_at is not None:  # TTS audio in → the image of its first frame out
                    self.stats.first_audio_to_image_s.append(time.monotonic() - heard_at)
            await self._push_image(ready)
            self._audio_line.append((ready.job, ready.marks, reply))
            while len(self._audio_line) > self._audio_delay:
                await self._push_audio(*self._audio_line.popleft())
            self._check_drained()

    def _reply_for(self, ready: _Ready) -> _Reply | None:
        """The reply whose audio this frame carries (tracks utterance start/done marks in play order)."""
        if ready.job.index < self._interrupted_before or not ready.job.speaking:
            return None
        if "utterance_start" in ready.marks and self._replies:
            self._playing = self._replies[0]
        reply = self._playing
        if "utterance_done" in ready.marks and self._replies:
            self._replies.popleft()
            self._playing = None
        return reply

    async def _push_image(self, ready: _Ready) -> None:
        assert self._renderer is not None
        h, w = self._renderer.size
        self.stats.late += int(ready.late)
        repeated = self._last_image is not None and ready.frame is self._last_image[0]
        if self._last_image is not None and repeated:
            image = self._last_image[1]  # the same render again
            self.stats.repeated += 1
        else:
            image = ready.frame.to_ndarray(format="rgb24").tobytes()  # [h, w, 3] uint8
            self._last_image = (ready.frame, image)
        out = OutputImageRawFrame(image=image, size=(w, h), format="RGB")
        out.pts = ready.job.pts * NS_PER_S // VIDEO_CLOCK_RATE  # the audio clock, in Pipecat's ns
        out.metadata["splatcast"] = {
            "frame": ready.job.index,
            "speaking": ready.job.speaking and ready.job.index >= self._interrupted_before,
            "mouth_open": ready.job.mouth_open,  # the lip-sync source's jawOpen
            "jaw_open": float(ready.job.params[self._jaw]) if self._jaw is not None else 0.0,  # as rendered
            "late": ready.late,  # the image is of an earlier frame
            "repeated": repeated,  # the image is exactly the previous one
        }
        self.stats.images += 1
        await self.push_frame(out)

    async def _push_audio(self, job: FrameJob, marks: list[str], reply: _Reply | None) -> None:
        pcm = job.audio.tobytes()  # [48000/fps] int16 mono
        if reply is None or job.index < self._interrupted_before:
            await self.push_frame(OutputAudioRawFrame(bytes(len(pcm)), OUTPUT_SAMPLE_RATE, 1))
            return
        if "utterance_start" in marks:
            await self.stop_ttfb_metrics()
            if reply.started is not None:
                await self.push_frame(reply.started)
        self.stats.speech_frames += 1
        self._speech_in_s -= 1.0 / self._fps
        await self.push_frame(TTSAudioRawFrame(pcm, OUTPUT_SAMPLE_RATE, 1, context_id=reply.context_id))
        if "utterance_done" in marks and reply.stopped is not None:
            await self.push_frame(reply.stopped)

    async def _flush_audio_line(self) -> None:
        while self._audio_line:
            await self._push_audio(*self._audio_line.popleft())

    def _queued_speech_s(self) -> float:
        """The speech received and not yet pushed out, in seconds."""
        return max(0.0, self._speech_in_s) + len(self._audio_line) / self._fps

    def _check_drained(self) -> None:
        stream = self._stream
        if stream is None:
            return
        busy = (
            stream.pending_utterances > 0
            or (self._incoming is not None and self._incoming.has_audio)
            or any(reply is not None for _, _, reply in self._audio_line)
        )
        if not busy:
            self._drained.set()

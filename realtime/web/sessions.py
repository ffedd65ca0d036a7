"""Sessions: one browser call each — peer connection, AvatarStream, frame clock, tracks, conversation.

A :class:`Session` owns everything of one call and frees all of it in
:meth:`Session.close` (tasks, peer connection, buffers). The
:class:`SessionManager` creates sessions from SDP offers (after admission
control), finds them by id, and closes them on ``DELETE``, disconnect, ICE
failure or idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import secrets
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame

from engines.library.store import LibraryError
from engines.splat.avatar import AvatarFormatError
from realtime.events import (
    Closed,
    ConnectionChanged,
    Error,
    Event,
    Interrupted,
    LipLatency,
    Stage,
    StateChanged,
    Stats,
    Transcript,
    UtteranceQueued,
    UtteranceStarted,
)
from realtime.media.avatars import SessionAvatar
from realtime.media.engine import Engine
from realtime.media.mic_jitter import listen_promptly
from realtime.media.pacer import FramePacer
from realtime.media.scheduler import AtCapacity, Lease
from realtime.media.stream import AvatarStream, FrameJob
from realtime.media.tracks import AvatarAudioTrack, AvatarVideoTrack, MediaOutlet
from realtime.media.video_encoder import EncodeStats
from realtime.tasks import spawn
from realtime.web.agent_check import Load
from realtime.web.memory import release_freed_memory
from realtime.web.sdp import OfferError, check_offer

logger = logging.getLogger(__name__)


class SessionError(Exception):
    """A request about a session cannot be served; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Talker(Protocol):
    """The conversation loop of a session (realtime.conversation.Conversation)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def say(self, text: str) -> None: ...

    async def interrupt(self) -> None: ...

    async def consume_track(self, track: MediaStreamTrack) -> None: ...


TalkerFactory = Callable[[AvatarStream, Callable[[Event], None]], Talker]


@dataclass
class SessionInfo:
    id: str
    state: str
    connection: str
    age_s: float
    frames: int
    repeated: int
    level: int
    client: str | None  # the address that created it (the real client behind a trusted proxy)
    avatar: str = "default"


class Session:
    def __init__(
        self,
        engine: Engine,
        talker_factory: TalkerFactory | None,
        ice_servers: tuple[str, ...],
        lease: Lease | None = None,
        client: str | None = None,
        avatar: SessionAvatar | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.lease = lease  # its admission to the render pool, released when it closes
        self.client = client  # the address that created it (the real client behind a trusted proxy)
        self.avatar = avatar  # the library avatar it shows, held until it closes (None: the engine's own)
        self.token = secrets.token_urlsafe(24)
        self.engine = engine
        self.created = time.monotonic()
        self.last_activity = self.created
        self.stream = engine.new_stream(
            seed=int.from_bytes(secrets.token_bytes(4), "big"), avatar=avatar.avatar if avatar else None
        )
        self.outlet = MediaOutlet(engine.settings.fps, self.stream.sample_rate, on_start=self._on_clock_start)
        self.outlet.encode_timer = lambda ms: engine.scheduler.timings.observe("encode", ms)
        renderer = avatar.renderer if avatar is not None else engine.renderer
        # the VP8 encoder (realtime.media.video_encoder) reports each frame it encodes here
        self.encoded = EncodeStats(functools.partial(engine.scheduler.timings.observe, "encode_cpu"))
        self.pacer = FramePacer(
            self.stream, engine.scheduler, renderer, self._release, on_error=self._pacer_failed
        )
        self.video = AvatarVideoTrack(self.outlet)
        self.audio = AvatarAudioTrack(self.outlet)
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
        self.pc = RTCPeerConnection(configuration=config)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self.closed = asyncio.Event()
        self._closing = False
        voice = avatar.voice if avatar is not None else None
        if talker_factory is None:
            self.talker = None
        elif voice is not None:  # the avatar speaks with its own voice
            self.talker = talker_factory(self.stream, self.publish, voice=voice)  # type: ignore[call-arg]
        else:
            self.talker = talker_factory(self.stream, self.publish)
        self.stream.add_listener(self.publish)
        self.stream.add_listener(self._silence_on_interrupt)
        self._stats_task: asyncio.Task[None] | None = None
        self._mic_task: asyncio.Task[None] | None = None
        self._talker_start: asyncio.Task[None] | None = None
        self._reply_in_at: float | None = None  # monotonic time the current reply's first TTS audio arrived
        self._reply_first_frame: int | None = None  # index of that reply's first frame, once it starts
        self._on_end: Callable[[Session], Coroutine[Any, Any, Any]] | None = (
            None  # set by answer(): ends this session
        )
        self._ending: asyncio.Task[Any] | None = None

    # --- signalling --------------------------------------------------------------------------------
    async def answer(
        self, sdp: str, kind: str, on_end: Callable[[Session], Coroutine[Any, Any, Any]]
    ) -> RTCSessionDescription:
        """``on_end(session)`` ends this session (the manager's close), when its peer connection fails
        or closes, or when its frame pacer fails."""
        self._on_end = on_end

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = self.pc.connectionState
            logger.info("session %s: connection %s", self.id, state)
            self.publish(ConnectionChanged(state=state))
            if state in ("failed", "closed"):
                await on_end(self)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self.talker is not None and self._mic_task is None:
                self._mic_task = spawn(
                    self.talker.consume_track(track), f"session {self.id}: mic", self._stage_failed("stt")
                )

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        self._attach_tracks()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        if self.talker is not None:  # the conversation warms up while the media connects
            self._talker_start = spawn(
                self.talker.start(), f"session {self.id}: conversation start", self._stage_failed("pipeline")
            )
        self._stats_task = spawn(self._stats_loop(), f"session {self.id}: stats")
        return self.pc.localDescription

    def _attach_tracks(self) -> None:
        """Put our tracks on the offered transceivers (the browser offers audio sendrecv, video recvonly)."""
        kinds = {t.kind for t in self.pc.getTransceivers()}
        if "video" not in kinds:
            raise SessionError("the offer has no video m-line: offer to receive video (recvonly or sendrecv)")
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                self.pc.addTrack(self.video)
                _prefer_vp8(transceiver)
            elif transceiver.kind == "audio":
                self.pc.addTrack(self.audio)
                listen_promptly(transceiver.receiver)  # the user's voice reaches the VAD 60 ms sooner

    def _on_clock_start(self, t0: float) -> None:
        self.pacer.start(t0)

    def _stage_failed(self, stage: Stage) -> Callable[[BaseException], None]:
        """A background task of this session failed (already logged): say so on the events websocket."""

        def report(exc: BaseException) -> None:
            self.publish(Error(message=f"{stage} stopped: {exc or type(exc).__name__}"[:300], stage=stage))

        return report

    def _pacer_failed(self, exc: BaseException) -> None:
        """No more frames would come: the session ends, with an error event first."""
        self.publish(
            Error(
                message=f"the avatar's frame pacer stopped: {exc or type(exc).__name__}"[:300], stage="avatar"
            )
        )
        if self._on_end is not None and self._ending is None and not self._closing:
            self._ending = spawn(self._on_end(self), f"session {self.id}: close after a pacer failure")

    def _release(self, job: FrameJob, frame: VideoFrame, repeated: bool) -> None:
        """Hand a frame to the tracks; time a reply's first TTS audio → its first frame (tts_to_frame)."""
        if job.index == self._reply_first_frame and self._reply_in_at is not None:
            ms = (time.monotonic() - self._reply_in_at) * 1000.0
            self.engine.scheduler.timings.observe("tts_to_frame", ms)
            self.publish(LipLatency(frame=job.index, ms=round(ms, 2)))
            self._reply_in_at = self._reply_first_frame = None
        frame.opaque = self.encoded  # the encoder's report of this frame goes to this session
        self.outlet.release(job, frame, repeated)

    def _silence_on_interrupt(self, event: Event) -> None:
        """However the avatar was interrupted (``/interrupt``, the user's voice): audio not sent yet,
        released or still in a render in flight, goes silent at once."""
        if isinstance(event, Interrupted):
            self.outlet.drop_pending_audio(until_frame=event.frame)

    def _time_reply(self, event: Event) -> None:
        if isinstance(event, UtteranceQueued) and event.ahead == 0 and self._reply_in_at is None:
            self._reply_in_at = time.monotonic()  # a reply that waits behind another is not timed
        elif isinstance(event, UtteranceStarted) and self._reply_in_at is not None:
            self._reply_first_frame = event.frame
        elif isinstance(event, Interrupted):
            self._reply_in_at = self._reply_first_frame = None

    # --- commands --------------------------------------------------------------------------------
    async def _talker_ready(self) -> Talker:
        if self.talker is None or self._talker_start is None:
            raise SessionError("this server runs without a conversation loop", 503)
        try:
            await asyncio.wait_for(asyncio.shield(self._talker_start), timeout=60)
        except TimeoutError as exc:
            raise SessionError(
                "the conversation loop is still starting; try again", 503, retry_after=5
            ) from exc
        except Exception as exc:
            raise SessionError(f"the conversation loop failed to start: {exc}", 503) from exc
        return self.talker

    async def say(self, text: str) -> None:
        self.touch()
        talker = await self._talker_ready()
        await talker.say(text)

    async def interrupt(self) -> None:
        self.touch()
        # at once: pending audio and frames are dropped here, and (_silence_on_interrupt) what was
        # released or is still being rendered but not yet sent goes silent
        self.stream.interrupt()
        if self.talker is not None and self._talker_start is not None and self._talker_start.done():
            await self.talker.interrupt()  # and the reply in flight stops upstream

    def set_emotion(self, name: str, intensity: float) -> None:
        """Hold an emotion (it wins over inferred ones); ``"auto"``: back to each sentence's own."""
        self.touch()
        try:
            if name.strip().lower() == "auto":
                self.stream.clear_emotion()
            else:
                self.stream.set_emotion(name, intensity)
        except ValueError as exc:
            raise SessionError(str(exc), 400) from exc

    def set_expressiveness(self, value: float) -> None:
        """0..1: inferred emotion, emphasis and listening reactions (0: the face as without them)."""
        self.touch()
        try:
            self.stream.set_expressiveness(value)
        except ValueError as exc:
            raise SessionError(str(exc), 400) from exc

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # --- events ----------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        self._time_reply(event)
        if isinstance(event, Transcript | UtteranceStarted):
            self.touch()  # talking counts as activity for the idle timeout
        for q in list(self._subscribers):
            if q.qsize() < 256:  # a slow websocket loses events rather than growing memory
                q.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(q)
        q.put_nowait(StateChanged(state=self.stream.state))
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.publish(self.stats())

    def stats(self) -> Stats:
        c, o, s = self.pacer.stats, self.outlet.stats, self.stream.stats
        return Stats(
            frames=c.frames,
            repeated=c.repeated,
            ladder_level=c.level,
            video_sent=o.video_sent,
            audio_gap_packets=o.audio_gap_packets,
            utterances=s.utterances,
            underrun_samples=s.underrun_samples,
            state=self.stream.state,
            video_kbps=round(self.encoded.bitrate / 1000) if self.encoded.bitrate else None,
            video_psnr_db=None if (psnr := self.encoded.take_psnr()) is None else round(psnr, 2),
            video_keyframes=self.encoded.keyframes,
        )

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            state=self.stream.state,
            connection=self.pc.connectionState,
            age_s=round(time.monotonic() - self.created, 1),
            frames=self.pacer.stats.frames,
            repeated=self.pacer.stats.repeated,
            level=self.pacer.stats.level,
            client=self.client,
            avatar=self.avatar.id if self.avatar is not None else "default",
        )

    # --- teardown --------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.publish(Closed())
        for task in (self._stats_task, self._mic_task, self._talker_start):
            if task is not None:
                task.cancel()
                # a failure was logged and reported on the websocket when it happened (tasks.watch)
                await asyncio.gather(task, return_exceptions=True)
        if self.talker is not None:
            try:
                await self.talker.stop()
            except Exception:
                logger.exception("session %s: conversation did not stop cleanly", self.id)
        await self.pacer.stop()
        self.outlet.close()
        self.video.stop()
        self.audio.stop()
        await self.pc.close()
        self._subscribers.clear()
        if self.lease is not None:
            self.lease.release()
        if self.avatar is not None:
            self.avatar.release()  # the avatar may now be evicted or deleted
        self.closed.set()
        logger.info("session %s: closed", self.id)


def _prefer_vp8(transceiver: Any) -> None:
    """VP8 encodes 4× faster than H.264 here (FACTS.md); keep H.264 as a fallback."""
    from aiortc.rtcrtpsender import RTCRtpSender

    codecs = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for c in codecs if c.mimeType == "video/VP8"] + [
        c for c in codecs if c.mimeType != "video/VP8"
    ]
    try:
        transceiver.setCodecPreferences(ordered)
    except Exception:  # the offer's codecs decide; aiortc negotiates what it can
        logger.warning("session: could not prefer VP8 on this transceiver", exc_info=True)


class SessionManager:
    def __init__(
        self,
        engine: Engine,
        talker_factory: TalkerFactory | None = None,
    ) -> None:
        self.engine = engine
        self.talker_factory = talker_factory
        self.idle_timeout_s = engine.settings.idle_timeout_s
        self.session_max_s = engine.settings.session_max_s
        self.max_sessions = engine.settings.max_sessions
        self.connect_timeout_s = engine.settings.connect_timeout_s
        self.sessions: dict[str, Session] = {}
        # every peer connection made, weakly: /metrics counts those not yet closed, so a leak shows up
        self.peer_connections: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()
        self._reaper: asyncio.Task[None] | None = None
        self._collector: asyncio.Task[None] | None = None
        self.draining = False
        self.voices: Any = None  # engines.voices.VoiceCatalog of the server (GET /api/voices)
        # loads an avatar's own voice before its session starts (blocking; run in an executor)
        self.prepare_voice: Callable[[str | None], Any] | None = None

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = spawn(self._reap(), "session reaper")

    def capacity(self) -> int:
        """Sessions this server holds at once (/healthz, /metrics)."""
        return self.engine.scheduler.limit(self.engine.settings.capacity, self.max_sessions)

    def load(self) -> Load:
        """What a balancer needs to know (the agent check): sessions, capacity, draining."""
        return Load(sessions=len(self.sessions), capacity=self.capacity(), draining=self.draining)

    async def create(
        self, sdp: str, kind: str, client: str | None = None, avatar: str | None = None
    ) -> tuple[Session, RTCSessionDescription]:
        if self.draining:
            raise SessionError("the server is shutting down", 503, retry_after=30)
        if kind != "offer":
            raise SessionError(f"expected an SDP of type 'offer', got {kind!r}")
        try:
            check_offer(sdp)
        except OfferError as exc:
            raise SessionError(str(exc), exc.status) from exc
        try:
            lease = self.engine.scheduler.lease(self.engine.settings.capacity, self.max_sessions)
        except AtCapacity as exc:
            raise SessionError(str(exc), 503, retry_after=exc.retry_after) from exc
        try:
            held = await self._hold_avatar(avatar)
        except BaseException:
            lease.release()
            raise
        try:
            session = Session(
                self.engine, self.talker_factory, self.engine.settings.ice_servers, lease, client, held
            )
        except BaseException:
            lease.release()
            if held is not None:
                held.release()
            raise
        self.sessions[session.id] = session
        self.peer_connections.add(session.pc)
        try:
            answer = await session.answer(sdp, kind, self._ended)
        except SessionError:
            await self.close(session.id)
            raise
        except Exception as exc:  # aiortc raises ValueError and friends on malformed SDP
            await self.close(session.id)
            raise SessionError(f"cannot use this SDP offer: {exc}") from exc
        logger.info("session %s: created for %s (%d active)", session.id, client or "?", len(self.sessions))
        return session, answer

    async def _hold_avatar(self, avatar: str | None) -> SessionAvatar | None:
        """The session's avatar from the library, loaded if needed (None: the engine's own avatar)."""
        avatars = self.engine.avatars
        if avatars is None:
            if avatar not in (None, "", "default"):
                raise SessionError("this server has no avatar library; leave 'avatar' out", 400)
            return None
        loop = asyncio.get_running_loop()
        try:
            held = await loop.run_in_executor(None, avatars.acquire, avatar)
        except LibraryError as exc:
            raise SessionError(str(exc), exc.status) from exc
        except AvatarFormatError as exc:
            raise SessionError(f"avatar {avatar!r} cannot be loaded: {exc}", 500) from exc
        if held.voice is not None and self.prepare_voice is not None:
            try:
                await loop.run_in_executor(None, self.prepare_voice, held.voice)
            except Exception as exc:  # a voice that vanished from disk: say so, keep the server serving
                held.release()
                raise SessionError(
                    f"avatar {held.id!r} speaks with voice {held.voice!r}, which cannot be loaded: {exc}", 500
                ) from exc
        return held

    def live_peer_connections(self) -> int:
        """Peer connections this process made that are not closed yet (sessions' and any leaked)."""
        return sum(1 for pc in list(self.peer_connections) if pc.connectionState != "closed")

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(f"no session {session_id!r}", 404)
        return session

    async def _ended(self, session: Session) -> None:
        await self.close(session.id)

    async def close(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        await session.close()
        self._collect_soon()
        return True

    def _collect_soon(self) -> None:
        """Free closed sessions now rather than at the next full collection (see :meth:`_collect`)."""
        if self._collector is None or self._collector.done():
            self._collector = spawn(self._collect(), "session gc")

    async def _collect(self) -> None:
        """A closed session is a web of reference cycles (bound methods in its clock, outlet, stream,
        conversation and peer connection point back at it) holding ~20 MB; only the cyclic collector
        frees it, and a full collection comes rarely, so RSS climbed ~20 MB per session for minutes
        (``bench soak``). Collect once the frames that closed it are gone (one pass, ~25 ms here
        with the startup objects frozen by the server), then hand the pages back to the OS."""
        await asyncio.sleep(1.0)
        gc.collect()
        await asyncio.get_running_loop().run_in_executor(None, release_freed_memory)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(sid) for sid in list(self.sessions)), return_exceptions=True)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
            self._collector = None

    async def _reap(self) -> None:
        period = min(5.0, self.connect_timeout_s / 2)
        while True:
            await asyncio.sleep(period)
            # one pass in its own frame: a loop variable left here while sleeping would keep the
            # last session checked (its stream, buffers, peer connection) alive after it closed
            await self._reap_once()

    async def _reap_once(self) -> None:
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            connected = session.pc.connectionState == "connected"
            idle = now - session.last_activity
            age = now - session.created
            # never connected (ICE did not complete) or lost: ended after connect_timeout_s
            if (
                (not connected and age > self.connect_timeout_s)
                or idle > self.idle_timeout_s
                or age > self.session_max_s
            ):
                logger.info(
                    "session %s: closing (connection %s, idle %.0f s)",
                    sid,
                    session.pc.connectionState,
                    idle,
                )
                await self.close(sid)

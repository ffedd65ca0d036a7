"""A real aiortc client for benchmarks and tests: connects to a splatcast server and records what arrives.

Every received video frame and audio packet is kept with its receive time
(``time.monotonic()``), so tests can measure frame rate, audio energy, mouth
motion and interrupt latency on the receiving side.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame


@dataclass
class Received:
    video_t: list[float] = field(default_factory=list)
    video_pts: list[int] = field(default_factory=list)
    mouth: list[float] = field(default_factory=list)  # mean luminance of the mouth box per frame
    audio_t: list[float] = field(default_factory=list)
    audio_rms: list[float] = field(default_factory=list)  # per received packet, int16 full scale = 1
    video_diff: list[float] = field(default_factory=list)  # mean |gray - previous gray| (every 4th pixel)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (receive time, event)


MIC_RATE = 48_000  # what a browser's microphone track sends (Opus at 48 kHz)
MIC_FRAME = MIC_RATE // 50  # 20 ms


@dataclass
class _Playing:
    signal: np.ndarray  # [N] float32 at 48 kHz, a whole number of frames
    voiced: tuple[int, int]  # first and last voiced sample
    done: asyncio.Future[tuple[float, float]]
    pos: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


class MicTrack(MediaStreamTrack):
    """A microphone for the client: 20 ms mono frames at 48 kHz on a real-time schedule, silent until
    :meth:`say` queues a signal; reports when the signal's first and last voiced frames were sent."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[_Playing] = []
        self._start: float | None = None
        self._k = 0

    def say(self, signal: np.ndarray, voiced: tuple[int, int]) -> asyncio.Future[tuple[float, float]]:
        """Queue ``signal`` ([N] float32 at 48 kHz); the future gets the times (monotonic) the frames
        holding sample ``voiced[0]`` and ``voiced[1]`` (first and last voiced) left the track."""
        done: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        padded = np.concatenate([signal, np.zeros(-len(signal) % MIC_FRAME, np.float32)]).astype(np.float32)
        self._queue.append(_Playing(padded, voiced, done))
        return done

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._k * 0.02 - time.monotonic()))
        samples = np.zeros(MIC_FRAME, np.float32)
        if self._queue:
            p = self._queue[0]
            samples = p.signal[p.pos : p.pos + MIC_FRAME]
            now = time.monotonic()
            if p.pos <= p.voiced[0] < p.pos + MIC_FRAME:
                p.first_at = now
            if p.pos <= p.voiced[1] < p.pos + MIC_FRAME:
                p.last_at = now
            p.pos += MIC_FRAME
            if p.pos >= len(p.signal):
                self._queue.pop(0)
                if not p.done.done():
                    p.done.set_result((p.first_at, p.last_at))
        frame = AudioFrame.from_ndarray(
            (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = MIC_RATE
        frame.pts = self._k * MIC_FRAME
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._k += 1
        return frame


class Client:
    def __init__(
        self,
        base: str,
        mouth_box: tuple[int, int, int, int] | None = None,
        api_token: str | None = None,
        protocol: str = "splatcast",
        mic: MediaStreamTrack | None = None,
        source_address: str | None = None,
        avatar: str | None = None,
        analyse_video: bool = True,
    ) -> None:
        """``protocol``: ``splatcast`` (``splatcast serve``) or ``smallwebrtc`` (Pipecat's SmallWebRTC
        signalling, as ``splatcast bot`` and Pipecat's prebuilt client speak it: ``POST /start``, then
        ``POST /sessions/{id}/api/offer``; audio transceiver first). ``mic``: the user's voice, sent on
        the audio transceiver (e.g. a :class:`MicTrack`); without it audio is receive-only.
        ``source_address``: the local address its HTTP requests come from (e.g. 127.0.0.7: one more
        client address to the server's per-address limits). ``analyse_video=False``: keep only each
        decoded frame's arrival time and pts (``rx.video_t``, ``rx.video_pts``, ``last_frame``), not the
        gray-image work behind ``rx.mouth`` and ``rx.video_diff``: for a benchmark that shares the machine
        with the server and reads neither (``bench load``)."""
        if protocol not in ("splatcast", "smallwebrtc"):
            raise ValueError(f"protocol must be splatcast or smallwebrtc, got {protocol!r}")
        self.protocol = protocol
        self.mic = mic
        self.avatar = avatar  # a library id for the offer (None: the server's default avatar)
        self.last_frame: VideoFrame | None = None  # the newest received video frame
        self.base = base.rstrip("/")
        self.api_token = api_token  # the server's token, when it has one
        self.mouth_box = mouth_box
        self.analyse_video = analyse_video
        self.pc = RTCPeerConnection()
        self.rx = Received()
        self.session_id: str | None = None
        self.token: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        connector = aiohttp.TCPConnector(local_addr=(source_address, 0)) if source_address else None
        self.http = aiohttp.ClientSession(connector=connector)
        self.connected_at: float | None = None
        self._prev_gray: np.ndarray | None = None

    async def __aenter__(self) -> Client:
        """``async with Client(base) as client:`` connects, and closes (with DELETE) at the end."""
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self.pc.on("track", self._on_track)
        if self.protocol == "smallwebrtc":
            await self._connect_smallwebrtc()
            return
        self.pc.addTransceiver("video", direction="recvonly")
        if self.mic is not None:  # as a browser offers its microphone: audio both ways
            self.pc.addTransceiver(self.mic, direction="sendrecv")
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.connected_at = time.monotonic()
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if self.avatar is not None:
            offer["avatar"] = self.avatar
        async with self.http.post(f"{self.base}/api/offer", json=offer, headers=headers) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"offer refused: {resp.status} {body}")
        self.session_id, self.token = body["session_id"], body.get("token")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

    async def _connect_smallwebrtc(self) -> None:
        # SmallWebRTC takes the first transceiver as audio and the second as video
        if self.mic is not None:
            self.pc.addTransceiver(self.mic, direction="sendrecv")
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.connected_at = time.monotonic()
        async with self.http.post(f"{self.base}/start", json={"transport": "webrtc"}) as resp:
            start = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"start refused: {resp.status} {start}")
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        url = f"{self.base}/sessions/{start['sessionId']}/api/offer"
        async with self.http.post(url, json=offer) as resp:
            if resp.status != 200:
                raise RuntimeError(f"offer refused: {resp.status} {await resp.text()}")
            body = await resp.json()
        self.session_id = body["pc_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._video if track.kind == "video" else self._audio
        self._tasks.append(asyncio.get_running_loop().create_task(reader(track)))

    async def _video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                t = time.monotonic()
                assert isinstance(frame, VideoFrame)
                self.last_frame = frame
                self.rx.video_t.append(t)
                self.rx.video_pts.append(int(frame.pts or 0))
                if not self.analyse_video:
                    continue
                gray = frame.to_ndarray(format="gray")
                if self.mouth_box is not None:
                    x0, y0, x1, y1 = self.mouth_box
                    self.rx.mouth.append(float(gray[y0:y1, x0:x1].mean()))
                small = gray[::4, ::4].astype(np.int16)  # [h/4, w/4]
                prev, self._prev_gray = self._prev_gray, small
                diff = np.abs(small - prev).mean() if prev is not None and prev.shape == small.shape else -1.0
                self.rx.video_diff.append(float(diff))

    async def _audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                t = time.monotonic()
                assert isinstance(frame, AudioFrame)
                samples = frame.to_ndarray().astype(np.float32) / 32768.0
                self.rx.audio_t.append(t)
                self.rx.audio_rms.append(float(np.sqrt(np.mean(samples * samples))))

    @property
    def auth(self) -> dict[str, str]:
        """The session's own token as a Bearer header (session routes need it)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def post(self, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
        url = f"{self.base}/api/sessions/{self.session_id}/{path}"
        async with self.http.post(url, json=payload or {}, headers=self.auth) as r:
            return r.status, await r.json()

    def watch_events(self) -> None:
        """Record the session's websocket events (``rx.events``) until :meth:`close`."""
        self._tasks.append(asyncio.get_running_loop().create_task(self._events()))

    async def _events(self) -> None:
        url = f"{self.base}/api/sessions/{self.session_id}/events"
        params = {"token": self.token} if self.token else None
        with contextlib.suppress(aiohttp.ClientError):
            async with self.http.ws_connect(url, params=params) as ws:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self.rx.events.append((time.monotonic(), json.loads(msg.data)))

    async def get(self, path: str) -> tuple[int, str]:
        """GET a server path (e.g. ``/metrics``): (status, body text)."""
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        async with self.http.get(f"{self.base}{path}", headers=headers) as r:
            return r.status, await r.text()

    async def wait_video(self, frames: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.rx.video_t) < frames:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.rx.video_t)} video frames after {timeout} s")
            await asyncio.sleep(0.05)

    async def close(self, delete: bool = True) -> None:
        if delete and self.session_id and self.protocol == "splatcast":
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.delete(f"{self.base}/api/sessions/{self.session_id}", headers=self.auth):
                    pass
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.close()


def fps_between(times: list[float], start: float, end: float) -> float:
    ts = [t for t in times if start <= t <= end]
    if len(ts) < 2:
        return 0.0
    return (len(ts) - 1) / (ts[-1] - ts[0])

"""aiortc tracks that send an AvatarStream's frames and audio on one clock.

:class:`MediaOutlet` is the meeting point: the session's frame clock
*releases* frame ``k`` together with the audio for ``[t_k, t_k+1)`` (invariant 2),
and the two tracks take from it. Both tracks pace against one absolute monotonic
schedule started by the first ``recv()`` of either (invariant 4): video frame
``k`` leaves at ``t0 + k/fps``, audio packet ``j`` (20 ms) at ``t0 + j·0.02``.
Video pts come from the audio sample clock (``samples · 90000 / 48000``), not
from aiortc's fixed 1/30 s ``next_timestamp`` (invariant 1).

Audio is kept by absolute sample position, so a late release can never shift
the audio against the video: a missing piece is sent as silence (counted as a
gap) and the late samples are discarded when they arrive.

Interrupt (invariant 6): :meth:`MediaOutlet.drop_pending_audio` silences every
sample before the interrupt's media position that has not been sent yet,
those released and those of frames still being rendered (their jobs were
taken before the interrupt and are released after it).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from realtime.media.clock import sleep_until
from realtime.media.stream import VIDEO_CLOCK_RATE, FrameJob

logger = logging.getLogger(__name__)

AUDIO_PTIME_S = 0.020
AUDIO_GRACE_S = 0.015  # how long an audio packet may wait for its frame's release before it is sent silent


@dataclass
class OutletStats:
    video_sent: int = 0
    audio_sent: int = 0
    audio_gap_packets: int = 0  # packets sent (partly) silent because their frame was not released in time
    video_skipped: int = 0  # released frames dropped because the video track fell behind
    repeated: int = 0


class MediaOutlet:
    """Released (frame, audio) pairs of one session and the clock both tracks pace against."""

    def __init__(self, fps: int, sample_rate: int, on_start: Callable[[float], None] | None = None) -> None:
        self.fps = fps
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate // fps
        self.samples_per_packet = int(sample_rate * AUDIO_PTIME_S)
        self.t0: float | None = None
        self._on_start = on_start
        self._video: deque[tuple[int, int, VideoFrame]] = deque()  # (k, pts, frame)
        self._video_event = asyncio.Event()
        self._audio: deque[tuple[int, np.ndarray]] = deque()  # (first sample, int16 samples)
        self._audio_event = asyncio.Event()
        self._released_until = 0  # audio samples released so far (end position)
        self._sent_until = 0  # audio samples handed to the audio track so far
        self._mute_until = 0  # audio before this sample position is silenced when released (interrupt)
        self.stats = OutletStats()
        self.closed = False
        self.encode_timer: Callable[[float], None] | None = None  # records ms between video recv() calls

    def start(self) -> float:
        """Start the clock (first recv of either track); idempotent."""
        if self.t0 is None:
            self.t0 = time.monotonic()
            if self._on_start is not None:
                self._on_start(self.t0)
        return self.t0

    def release(self, job: FrameJob, frame: VideoFrame, repeated: bool = False) -> None:
        """Frame ``job.index`` is final: its image and its audio may now leave.

        ``repeated``: ``frame`` is an older image shown again. It goes out as the same object, not a
        copy: the video track hands frames to aiortc's sender one at a time (the sender asks for the
        next only once the last is encoded and sent; VP8 and H.264 run without lookahead, so the
        encoder keeps no reference), and the track stamps each one's pts as it hands it over. A copy
        here cost the event loop a 390 kB allocation, a page-faulting fill and PyAV's plane stacking
        per repeat, exactly when the machine was already too busy to render.
        """
        start = job.index * self.samples_per_frame
        audio = job.audio
        if start < self._mute_until and audio.any():  # taken before an interrupt, released after it
            audio = audio.copy()
            audio[: self._mute_until - start] = 0
        self._audio.append((start, audio))
        self._released_until = start + len(job.audio)
        self._video.append((job.index, job.pts, frame))
        self.stats.repeated += int(repeated)
        # keep memory bounded if nobody consumes (e.g. a client that negotiated video only)
        while len(self._video) > 2 * self.fps:
            self._video.popleft()
        while len(self._audio) > 2 * self.fps:
            self._audio.popleft()
        self._video_event.set()
        self._audio_event.set()

    def drop_pending_audio(self, until_frame: int | None = None) -> int:
        """Silence audio that has not been sent yet (interrupt); returns released samples dropped.

        ``until_frame``: the first frame made after the interrupt (``AvatarStream.frame_index``);
        frames before it that are released later (renders in flight) leave silent too.
        """
        if until_frame is not None:
            self._mute_until = max(self._mute_until, until_frame * self.samples_per_frame)
        dropped = 0
        for i, (start, samples) in enumerate(self._audio):
            cut = max(0, self._sent_until - start)
            if cut < len(samples) and samples[cut:].any():
                kept = samples.copy()
                kept[cut:] = 0
                dropped += len(samples) - cut
                self._audio[i] = (start, kept)
        return dropped

    def close(self) -> None:
        self.closed = True
        self._video_event.set()
        self._audio_event.set()

    # --- video ---------------------------------------------------------------------------------
    async def next_video(self) -> tuple[int, int, VideoFrame]:
        t0 = self.start()
        while not self._video:
            if self.closed:
                raise MediaStreamError
            self._video_event.clear()
            await self._video_event.wait()
        if self.closed:
            raise MediaStreamError
        # fell behind by more than a frame: skip to the newest frame that is due (keeps video on the clock)
        now = time.monotonic()
        while len(self._video) > 1 and t0 + (self._video[1][0]) / self.fps <= now:
            self._video.popleft()
            self.stats.video_skipped += 1
        k, pts, frame = self._video.popleft()
        await sleep_until(t0 + k / self.fps)
        self.stats.video_sent += 1
        return k, pts, frame

    # --- audio ---------------------------------------------------------------------------------
    async def audio_packet(self, j: int) -> np.ndarray:
        """int16 samples of packet ``j`` (``[j·960, (j+1)·960)`` at 48 kHz), due at ``t0 + j·20 ms``."""
        t0 = self.start()
        due = t0 + j * AUDIO_PTIME_S
        await sleep_until(due)
        first = j * self.samples_per_packet
        last = first + self.samples_per_packet
        give_up = due + AUDIO_GRACE_S
        while self._released_until < last and not self.closed:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            self._audio_event.clear()
            try:
                await asyncio.wait_for(self._audio_event.wait(), timeout=remaining)
            except TimeoutError:
                break
        if self.closed:
            raise MediaStreamError
        out = np.zeros(self.samples_per_packet, np.int16)
        got = 0
        while self._audio and self._audio[0][0] + len(self._audio[0][1]) <= first:
            self._audio.popleft()  # entirely in the past
        for start, samples in self._audio:
            if start >= last:
                break
            a, b = max(first, start), min(last, start + len(samples))
            if b > a:
                out[a - first : b - first] = samples[a - start : b - start]
                got += b - a
        self._sent_until = max(self._sent_until, last)
        if got < self.samples_per_packet:
            self.stats.audio_gap_packets += 1
        self.stats.audio_sent += 1
        return out


class AvatarVideoTrack(MediaStreamTrack):
    """Video frames of one session, stamped on the audio sample clock (90 kHz)."""

    kind = "video"

    def __init__(self, outlet: MediaOutlet) -> None:
        super().__init__()
        self.outlet = outlet
        self._returned_at: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._returned_at is not None and self.outlet.encode_timer is not None:
            # the sender encodes and sends between our returns: that interval is the encode stage
            self.outlet.encode_timer((time.perf_counter() - self._returned_at) * 1000.0)
        _, pts, frame = await self.outlet.next_video()
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._returned_at = time.perf_counter()
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    """48 kHz mono audio of one session in 20 ms packets, released with its video frames."""

    kind = "audio"

    def __init__(self, outlet: MediaOutlet) -> None:
        super().__init__()
        self.outlet = outlet
        self._packet = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        j = self._packet
        self._packet += 1
        samples = await self.outlet.audio_packet(j)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.outlet.sample_rate
        frame.pts = j * self.outlet.samples_per_packet
        frame.time_base = fractions.Fraction(1, self.outlet.sample_rate)
        return frame

"""VP8 for rendered frames: libvpx settings for a rendered face, and what each encoded frame cost.

aiortc's RTP sender encodes every video frame with its ``Vp8Encoder``, tuned
for camera video: libvpx's temporal denoiser on (``noise-sensitivity`` 4),
``cpu-used`` −6. A rendered avatar has no sensor noise; the denoiser only
smooths the face between frames, and libvpx then spends bits coding that
smoothing. On 512 px frames of the default avatar it cost 2.44 ms of CPU and
gave 43.4 dB PSNR (luma) at 500 kb/s; without it, at ``cpu-used`` −8, 1.80 ms
and 46.4 dB (docs in the issue-16 note; ``tests/test_video_encoder.py``).

:class:`RenderedVp8Encoder` is aiortc's encoder with those settings. Like
aiortc's, it follows the receiver's bandwidth estimate (REMB sets
``target_bitrate``) by re-creating the libvpx context (libvpx cannot change
its rate in place), which costs a keyframe: ~4× a frame's CPU and a burst of
bits. It does so at once when the estimate drops by more than 10 %, but for
a rise at most every ``raise_after_s`` (aiortc: at every > 10 % step of the
ramp-up, 6–12 times in a call's first 20 s).

It also reports each frame: CPU time, size, whether it was a keyframe, the
bitrate, and the PSNR of the encoded frame against the frame it was given
(libvpx computes the per-plane squared error as it encodes, with the codec's
PSNR flag; no decode needed). A frame whose ``opaque`` attribute is an
:data:`EncodeObserver` has its report handed to it (called on the encoding
thread, aiortc's default executor).

aiortc has no codec registry: :func:`use_rendered_vp8` wraps the one function
its RTP sender calls to get an encoder (``aiortc.rtcrtpsender.get_encoder``),
so VP8 senders of this process use :class:`RenderedVp8Encoder` and every
other codec keeps aiortc's. Call it once at start, before the first call
connects; :func:`restore_aiortc_encoders` undoes it.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from av import VideoFrame
from av.frame import Frame

logger = logging.getLogger(__name__)

_QUALITY_STATS = "quality_stats"  # AVPacketSideData: u32 quality, u8 pict_type, u8 n, 2 pad, u64 sse[n]


@dataclass(frozen=True)
class VP8Settings:
    """libvpx settings for rendered frames (the rest as aiortc sets them: realtime, CBR, 1 partition)."""

    cpu_used: int = -8  # speed: −16 fastest; −8 kept aiortc's (−6) quality at 74 % of its CPU
    noise_sensitivity: int = 0  # temporal denoiser off: nothing to denoise in a rendered frame
    threads: int = 1  # libvpx threads per stream (aiortc: 1 below 640×480 on 2 cores)
    raise_after_s: float = 3.0  # a higher bandwidth estimate re-creates the encoder at most this often
    report_psnr: bool = True  # ask libvpx for each frame's squared error (PSNR in the report)


@dataclass(frozen=True)
class EncodedFrame:
    """What one encoded video frame cost and how close to its input it came out."""

    cpu_ms: float  # encoding thread's CPU time for this frame (libvpx + packetising)
    size_bytes: int
    bitrate: int  # the target the encoder ran at, bits per second
    keyframe: bool
    psnr_y_db: float | None  # luma PSNR of the encoded frame against the frame given (None: not reported)
    psnr_db: float | None  # over all three planes (weighted by their sizes)


EncodeObserver = Callable[[EncodedFrame], None]


class EncodeStats:
    """One stream's running totals of :class:`EncodedFrame` reports (thread-safe: the encoder reports
    from aiortc's executor threads). :meth:`take_psnr` gives the mean since it was last called."""

    def __init__(self, on_cpu_ms: Callable[[float], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_cpu_ms = on_cpu_ms
        self.frames = 0
        self.keyframes = 0
        self.bitrate: int | None = None
        self._psnr_sum = 0.0
        self._psnr_n = 0

    def __call__(self, report: EncodedFrame) -> None:
        with self._lock:
            self.frames += 1
            self.keyframes += int(report.keyframe)
            self.bitrate = report.bitrate
            if report.psnr_y_db is not None:
                self._psnr_sum += report.psnr_y_db
                self._psnr_n += 1
        if self._on_cpu_ms is not None:
            self._on_cpu_ms(report.cpu_ms)

    def take_psnr(self) -> float | None:
        """Mean luma PSNR (dB) of the frames reported since the last call (None: none reported)."""
        with self._lock:
            total, n = self._psnr_sum, self._psnr_n
            self._psnr_sum, self._psnr_n = 0.0, 0
        return total / n if n else None


def psnr_db(sse: float, samples: int) -> float:
    """PSNR of 8-bit samples from their summed squared error (capped at 100 dB for a perfect match)."""
    if sse <= 0:
        return 100.0
    return min(100.0, 10.0 * math.log10(255.0**2 * samples / sse))


class RenderedVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder (packetising, picture ids, REMB bitrate) with :class:`VP8Settings`."""

    def __init__(
        self, settings: VP8Settings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.settings = settings or VP8Settings()
        self._clock = clock
        self._created_at = -math.inf
        self.codecs_created = 0
        self.options: dict[str, str] = {}  # what the current libvpx context was opened with

    def _needs_new_codec(self, frame: VideoFrame) -> bool:
        codec = self.codec
        if codec is None or frame.width != codec.width or frame.height != codec.height:
            return True
        current = codec.bit_rate or self.target_bitrate
        change = (self.target_bitrate - current) / current
        if change < -0.1:
            return True  # the receiver has less bandwidth: follow at once
        return change > 0.1 and self._clock() - self._created_at >= self.settings.raise_after_s

    def _new_codec(self, frame: VideoFrame) -> Any:
        s = self.settings
        bitrate = self.target_bitrate
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = frame.width
        codec.height = frame.height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.time_base = frame.time_base or VIDEO_TIME_BASE
        codec.gop_size = 3000  # keyframes when asked (PLI/FIR) or when the encoder is re-created
        codec.qmin = 2
        codec.qmax = 56
        codec.thread_count = s.threads
        if s.report_psnr:
            codec.flags |= av.codec.context.Flags.psnr
        self.options = {
            "bufsize": str(bitrate),  # a 1 s rate-control buffer
            "cpu-used": str(s.cpu_used),
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),  # minrate = maxrate = bit_rate: CBR
            "maxrate": str(bitrate),
            "noise-sensitivity": str(s.noise_sensitivity),
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.options = dict(self.options)
        self._created_at = self._clock()
        self.codecs_created += 1
        return codec

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"RenderedVp8Encoder encodes video frames, got {type(frame).__name__}")
        started = time.thread_time()
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        codec = self.codec
        if codec is None or self._needs_new_codec(frame):
            codec = self.codec = self._new_codec(frame)
        # a repeated frame is the same object as before: a keyframe request must not stick to it
        frame.pict_type = av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        packets = codec.encode(frame)
        data = b"".join(bytes(p) for p in packets)
        payloads = self._packetize(data, self.picture_id)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        timestamp = convert_timebase(frame.pts or 0, frame.time_base or VIDEO_TIME_BASE, VIDEO_TIME_BASE)
        observer = frame.opaque
        if callable(observer):
            sse = _plane_sse(packets)
            luma = frame.width * frame.height
            chroma = (frame.width // 2) * (frame.height // 2)
            report = EncodedFrame(
                cpu_ms=(time.thread_time() - started) * 1000.0,
                size_bytes=len(data),
                bitrate=int(codec.bit_rate or 0),
                keyframe=bool(data) and not data[0] & 1,  # VP8 frame tag bit 0: 0 = key frame
                psnr_y_db=psnr_db(sse[0], luma) if sse else None,
                psnr_db=psnr_db(sum(sse), luma + 2 * chroma) if sse else None,
            )
            try:
                observer(report)
            except Exception:  # a broken observer must not stop the video
                logger.exception("RenderedVp8Encoder: the frame's observer failed")
        return payloads, timestamp


def _plane_sse(packets: list[Any]) -> tuple[int, ...]:
    """Per-plane summed squared error libvpx attached to the frame's packet (empty when it did not)."""
    for packet in packets:
        if packet.has_sidedata(_QUALITY_STATS):
            raw = bytes(packet.get_sidedata(_QUALITY_STATS))
            if len(raw) >= 8:
                count = raw[5]
                if len(raw) >= 8 + 8 * count and count >= 3:
                    return struct.unpack_from(f"<{count}Q", raw, 8)[:3]
    return ()


_aiortc_get_encoder: Callable[..., Any] | None = None  # aiortc's own, while ours is installed


def use_rendered_vp8(settings: VP8Settings | None = None) -> None:
    """Make this process's aiortc VP8 senders use :class:`RenderedVp8Encoder` (idempotent)."""
    global _aiortc_get_encoder
    import aiortc.rtcrtpsender as sender_module

    original = _aiortc_get_encoder or sender_module.get_encoder

    def get_encoder(codec: Any) -> Any:
        if codec.mimeType.lower() == "video/vp8":
            return RenderedVp8Encoder(settings)
        return original(codec)

    _aiortc_get_encoder = original
    sender_module.get_encoder = get_encoder
    logger.info("video encoder: VP8 senders use settings for rendered frames %s", settings or VP8Settings())


def restore_aiortc_encoders() -> None:
    """Undo :func:`use_rendered_vp8`."""
    global _aiortc_get_encoder
    import aiortc.rtcrtpsender as sender_module

    if _aiortc_get_encoder is not None:
        sender_module.get_encoder = _aiortc_get_encoder
        _aiortc_get_encoder = None

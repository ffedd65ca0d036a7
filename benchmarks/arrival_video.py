"""Receive VP8 over WebRTC without decoding it: for a benchmark that needs only when each frame arrived.

``bench load`` runs its aiortc clients on the machine it measures. Every
received frame still travels the whole WebRTC path (ICE, DTLS-SRTP
decryption, RTP depacketising, aiortc's jitter buffer reassembling the
complete VP8 frame, NACK/RTCP feedback), and each complete frame reaches
the client's track as before; only the libvpx decode is replaced by a check
of the VP8 frame header (RFC 6386 §9.1: a key frame carries the start code
and the picture size). Fresh FPS and frame intervals need only arrival
times, the server's ``repeated`` counter and its own PSNR report; a browser
would decode on the viewer's machine, not on the server's.

:func:`arrival_only_vp8` swaps aiortc's decoder choice for VP8 while it is
active (other codecs, and audio, still decode); frames it hands on are
2×2 placeholders with the frame's RTP timestamp as pts.
"""

from __future__ import annotations

import contextlib
import fractions
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from av import VideoFrame
from av.frame import Frame

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
_START_CODE = b"\x9d\x01\x2a"


@dataclass
class ArrivalCounts:
    """VP8 frames the clients received while :func:`arrival_only_vp8` was active (all clients together)."""

    frames: int = 0
    keyframes: int = 0
    malformed: int = 0  # not a VP8 frame: too short, a key frame without its start code, or zero-sized
    sizes: set[tuple[int, int]] = field(default_factory=set)  # picture sizes the key frames announced
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, info: tuple[bool, int, int] | None) -> None:
        with self._lock:
            self.frames += 1
            if info is None:
                self.malformed += 1
            elif info[0]:
                self.keyframes += 1
                self.sizes.add((info[1], info[2]))


def vp8_frame_info(data: bytes) -> tuple[bool, int, int] | None:
    """(key frame?, width, height) from a VP8 frame's header (0, 0 for an inter frame); None if malformed."""
    if len(data) < 3:
        return None
    tag = data[0] | (data[1] << 8) | (data[2] << 16)
    first_partition = tag >> 5
    if first_partition == 0 or first_partition > len(data):
        return None
    if tag & 1:  # inter frame: no start code, no size
        return False, 0, 0
    if len(data) < 10 or data[3:6] != _START_CODE:
        return None
    width = (data[6] | (data[7] << 8)) & 0x3FFF
    height = (data[8] | (data[9] << 8)) & 0x3FFF
    if width == 0 or height == 0:
        return None
    return True, width, height


class ArrivalOnlyVp8Decoder(Decoder):
    """Stands in for aiortc's VP8 decoder: checks each complete frame's header, hands on a placeholder."""

    def __init__(self, counts: ArrivalCounts) -> None:
        self.counts = counts

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        self.counts.add(vp8_frame_info(encoded_frame.data))
        frame = VideoFrame(2, 2, "yuv420p")
        frame.pts = encoded_frame.timestamp
        frame.time_base = VIDEO_TIME_BASE
        return [frame]


@contextlib.contextmanager
def arrival_only_vp8() -> Iterator[ArrivalCounts]:
    """While active, aiortc receivers that start decoding VP8 check and count frames instead of decoding."""
    import aiortc.rtcrtpreceiver as receiver

    real: Callable[[Any], Decoder] = receiver.get_decoder
    counts = ArrivalCounts()

    def choose(codec: Any) -> Decoder:
        if str(codec.mimeType).lower() == "video/vp8":
            return ArrivalOnlyVp8Decoder(counts)
        return real(codec)

    receiver.get_decoder = choose
    try:
        yield counts
    finally:
        receiver.get_decoder = real  # type: ignore[assignment]

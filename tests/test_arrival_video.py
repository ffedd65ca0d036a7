"""bench load's clients take VP8 over a real WebRTC connection without decoding it (benchmarks.arrival_video):
frames still arrive, one per sent frame, their headers are checked, and aiortc's own decoder comes back after."""

from __future__ import annotations

import asyncio
import fractions

import aiortc.rtcrtpreceiver as receiver
import av
import numpy as np
from aiortc import RTCPeerConnection, VideoStreamTrack
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame

from benchmarks.arrival_video import ArrivalCounts, arrival_only_vp8, vp8_frame_info

SIZE = (96, 64)  # width, height


def _vp8(frames: int) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
    codec.time_base = fractions.Fraction(1, 25)
    codec.options = {"deadline": "realtime", "lag-in-frames": "0"}
    out = []
    for i in range(frames):
        img = np.full((SIZE[1], SIZE[0], 3), 20 * i, np.uint8)
        frame = VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def test_vp8_header_check() -> None:
    key, inter = _vp8(2)
    assert vp8_frame_info(key) == (True, SIZE[0], SIZE[1])
    assert vp8_frame_info(inter) == (False, 0, 0)
    assert vp8_frame_info(b"") is None and vp8_frame_info(key[:2]) is None
    broken = bytearray(key)
    broken[3] = 0  # the key frame's start code
    assert vp8_frame_info(bytes(broken)) is None


def test_counts_from_several_decoder_threads_add_up() -> None:
    counts = ArrivalCounts()
    for info in [(True, 512, 512), (False, 0, 0), None]:
        counts.add(info)
    assert (counts.frames, counts.keyframes, counts.malformed, counts.sizes) == (3, 1, 1, {(512, 512)})


class _Moving(VideoStreamTrack):
    """aiortc's own 30 FPS test source, drawing a changing gray picture."""

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(np.full((SIZE[1], SIZE[0], 3), pts % 250, np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def _receive(frames: int) -> tuple[list[VideoFrame], ArrivalCounts]:
    sender, client = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(_Moving())
    got: list[VideoFrame] = []
    done = asyncio.get_running_loop().create_future()

    async def read(track: MediaStreamTrack) -> None:
        while len(got) < frames:
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            got.append(frame)
        done.set_result(None)

    client.on("track", lambda track: asyncio.ensure_future(read(track)))
    try:
        with arrival_only_vp8() as counts:
            await sender.setLocalDescription(await sender.createOffer())
            await client.setRemoteDescription(sender.localDescription)
            await client.setLocalDescription(await client.createAnswer())
            await sender.setRemoteDescription(client.localDescription)
            await asyncio.wait_for(done, timeout=30.0)
    finally:
        await sender.close()
        await client.close()
    return got, counts


async def test_frames_arrive_over_webrtc_checked_not_decoded() -> None:
    got, counts = await _receive(20)
    assert len(got) == 20
    assert all((f.width, f.height) == (2, 2) for f in got)  # placeholders: nothing was decoded
    pts = [int(f.pts or 0) for f in got]
    assert pts == sorted(pts) and len(set(pts)) == 20  # one per sent frame, their RTP timestamps
    assert counts.frames >= 20 and counts.malformed == 0
    assert counts.keyframes >= 1 and counts.sizes == {SIZE}  # the picture size the sender encoded
    assert isinstance(receiver.get_decoder(_codec("video/VP8")), Vp8Decoder)  # aiortc's own decoder again


def _codec(mime: str) -> object:
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    return RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96)

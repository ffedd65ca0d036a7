"""RenderedVp8Encoder: settings for rendered frames, honest per-frame reports, aiortc's behaviours kept."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Iterator

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engines.splat.render import Renderer
from engines.splat.synthetic import make_test_avatar
from realtime.media.video_encoder import (
    EncodedFrame,
    RenderedVp8Encoder,
    VP8Settings,
    psnr_db,
    restore_aiortc_encoders,
    use_rendered_vp8,
)

SIZE = (96, 128)  # (H, W)


@pytest.fixture(scope="module")
def i420_frames() -> np.ndarray:
    """uint8 [24, H·3/2, W]: a rendered avatar talking and turning its head."""
    avatar = make_test_avatar(2500, seed=3)
    t = np.arange(24) / 25.0
    params = np.concatenate(
        [avatar.params({"jawOpen": 0.4 + 0.4 * np.sin(7 * ti), "headYaw": 0.15 * np.sin(2 * ti)}) for ti in t]
    )
    return Renderer(avatar).render_i420(params, SIZE)


def _frame(i420: np.ndarray, k: int, observer: object = None) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    frame.pts = k * 3600
    frame.time_base = fractions.Fraction(1, 90_000)
    frame.opaque = observer
    return frame


def _decode_all(
    encoder: Vp8Encoder, frames: np.ndarray, reports: list[EncodedFrame], force: Iterator[bool] | None = None
) -> list[np.ndarray]:
    """Encode every frame, depacketise and decode it in order; returns the decoded I420 frames."""
    decoder = av.CodecContext.create("libvpx", "r")
    out = []
    for k, i420 in enumerate(frames):
        payloads, timestamp = encoder.encode(_frame(i420, k, reports.append), next(force) if force else False)
        assert timestamp == k * 3600
        data = b"".join(vp8_depayload(p) for p in payloads)
        (decoded,) = decoder.decode(av.Packet(data))
        out.append(decoded.to_ndarray())
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    sse = float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return psnr_db(sse, a.size)


def test_reported_psnr_is_the_decoded_frames_psnr(i420_frames: np.ndarray) -> None:
    reports: list[EncodedFrame] = []
    decoded = _decode_all(RenderedVp8Encoder(), i420_frames, reports)
    h = SIZE[0]
    assert len(reports) == len(i420_frames)
    for report, src, dec in zip(reports, i420_frames, decoded, strict=True):
        assert report.psnr_y_db == pytest.approx(_psnr(dec[:h], src[:h]), abs=0.01)
        assert report.psnr_db == pytest.approx(_psnr(dec, src), abs=0.01)
        assert report.cpu_ms > 0 and report.size_bytes > 0 and report.bitrate == 500_000
    assert reports[0].keyframe and not any(r.keyframe for r in reports[1:])
    assert min(r.psnr_y_db or 0 for r in reports) > 35.0


def test_beats_aiortcs_settings_on_rendered_frames(i420_frames: np.ndarray) -> None:
    """Same bitrate, no temporal denoiser: closer to the rendered frames than aiortc's encoder."""
    ours: list[EncodedFrame] = []
    theirs = _decode_all(Vp8Encoder(), i420_frames, [])
    _decode_all(RenderedVp8Encoder(), i420_frames, ours)
    h = SIZE[0]
    theirs_psnr = np.mean([_psnr(d[:h], s[:h]) for d, s in zip(theirs, i420_frames, strict=True)][4:])
    assert np.mean([r.psnr_y_db or 0 for r in ours][4:]) > theirs_psnr + 0.5


def test_settings_reach_libvpx(i420_frames: np.ndarray) -> None:
    encoder = RenderedVp8Encoder(VP8Settings(cpu_used=-12, noise_sensitivity=0, threads=1))
    encoder.encode(_frame(i420_frames[0], 0))
    assert encoder.codec is not None and encoder.codec.thread_count == 1
    assert encoder.options["cpu-used"] == "-12" and encoder.options["noise-sensitivity"] == "0"
    assert encoder.options["deadline"] == "realtime" and encoder.options["lag-in-frames"] == "0"


def test_keyframe_when_asked(i420_frames: np.ndarray) -> None:
    reports: list[EncodedFrame] = []
    asks = iter([False, False, False, True, False, False])
    _decode_all(RenderedVp8Encoder(), i420_frames[:6], reports, force=asks)
    assert [r.keyframe for r in reports] == [True, False, False, True, False, False]


def test_bitrate_follows_drops_at_once_and_rises_at_most_every_few_seconds(i420_frames: np.ndarray) -> None:
    now = [0.0]
    encoder = RenderedVp8Encoder(VP8Settings(raise_after_s=3.0), clock=lambda: now[0])
    reports: list[EncodedFrame] = []

    def step(k: int, bitrate: int, at: float) -> None:
        now[0] = at
        encoder.target_bitrate = bitrate  # what aiortc does on a REMB from the receiver
        encoder.encode(_frame(i420_frames[k % len(i420_frames)], k, reports.append))

    step(0, 500_000, 0.0)
    step(1, 700_000, 1.0)  # a rise within 3 s of the last encoder: not yet
    step(2, 900_000, 2.0)
    assert encoder.codecs_created == 1 and reports[-1].bitrate == 500_000
    step(3, 900_000, 3.0)  # 3 s on: follow the rise
    assert encoder.codecs_created == 2 and reports[-1].bitrate == 900_000 and reports[-1].keyframe
    step(4, 600_000, 3.5)  # a drop: at once
    assert encoder.codecs_created == 3 and reports[-1].bitrate == 600_000
    step(5, 640_000, 10.0)  # within 10 %: keep the encoder (no keyframe)
    assert encoder.codecs_created == 3 and not reports[-1].keyframe


def test_a_failing_observer_does_not_stop_the_video(i420_frames: np.ndarray) -> None:
    def broken(_report: EncodedFrame) -> None:
        raise RuntimeError("observer bug")

    payloads, _ = RenderedVp8Encoder().encode(_frame(i420_frames[0], 0, broken))
    assert payloads


class _RenderedTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, frames: np.ndarray, reports: list[EncodedFrame]) -> None:
        super().__init__()
        self.frames, self.reports, self.k = frames, reports, 0

    async def recv(self) -> av.VideoFrame:
        if self.k >= len(self.frames):
            raise MediaStreamError
        await asyncio.sleep(0.04)
        frame = _frame(self.frames[self.k], self.k, self.reports.append)
        self.k += 1
        return frame


async def test_aiortc_senders_use_it_once_installed(i420_frames: np.ndarray) -> None:
    """A real aiortc peer pair over loopback: the sender encodes with ours, the receiver decodes it."""
    import aiortc.rtcrtpsender as sender_module

    aiortc_own = sender_module.get_encoder
    use_rendered_vp8()
    use_rendered_vp8()  # idempotent: still one wrapper around aiortc's own
    reports: list[EncodedFrame] = []
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    received: list[av.VideoFrame] = []
    try:
        sender.addTrack(_RenderedTrack(i420_frames, reports))

        @receiver.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            async def read() -> None:
                while len(received) < 8:
                    received.append(await track.recv())

            asyncio.get_running_loop().create_task(read())

        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        for _ in range(200):
            if len(received) >= 8:
                break
            await asyncio.sleep(0.05)
        assert len(received) >= 8
        assert len(reports) >= 8  # our encoder reported the frames aiortc sent
        assert received[-1].height == SIZE[0] and received[-1].width == SIZE[1]
        assert sender_module.get_encoder(_codec("audio/opus")).__class__.__name__ == "OpusEncoder"
    finally:
        await sender.close()
        await receiver.close()
        restore_aiortc_encoders()
    assert sender_module.get_encoder is aiortc_own


def _codec(mime: str) -> object:
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    return RTCRtpCodecParameters(mimeType=mime, clockRate=48000, channels=2, payloadType=96)

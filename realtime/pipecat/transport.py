"""SmallWebRTC with video on the audio clock: a drop-in ``SmallWebRTCTransport`` for 25 FPS faces.

Pipecat's ``RawVideoTrack`` stamps frames with aiortc's fixed 1/30 s step
whatever the real rate, so at 25 FPS the video's RTP clock runs 20 % fast
against the audio. :class:`SplatSmallWebRTCTransport` is a drop-in
``SmallWebRTCTransport`` whose video track (:class:`AudioClockVideoTrack`)
stamps each frame with its own pts (the audio clock) instead; ``splatcast
bot`` uses it. With the stock transport, run the service at ``fps=30``, where
the fixed step is right.
"""

from __future__ import annotations

import fractions
import time
from typing import Any

import numpy as np
from av import VideoFrame
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import (
    RawVideoTrack,
    SmallWebRTCClient,
    SmallWebRTCTransport,
)

from realtime.media.stream import OUTPUT_SAMPLE_RATE, VIDEO_CLOCK_RATE

NS_PER_S = 1_000_000_000


class AudioClockVideoTrack(RawVideoTrack):
    """Pipecat's SmallWebRTC video track, stamping each frame with its own pts instead of 1/30 s steps.

    ``OutputImageRawFrame.pts`` (nanoseconds; :class:`SplatAvatarService` sets it
    from the audio clock) becomes the RTP time (90 kHz). A frame without pts is
    stamped with the wall time since the first frame. The track does not sleep:
    the output transport's live video loop already paces the frames.
    """

    def __init__(self, width: int, height: int) -> None:
        super().__init__(width, height)
        self._wall0: float | None = None
        self._last_pts = -1

    async def recv(self) -> VideoFrame:
        raw = await self._video_buffer.get()
        image = np.frombuffer(raw.image, dtype=np.uint8).reshape(self._height, self._width, 3)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        if self._wall0 is None:
            self._wall0 = time.monotonic()
        if raw.pts is not None:
            pts = int(raw.pts) * VIDEO_CLOCK_RATE // NS_PER_S
        else:
            pts = round((time.monotonic() - self._wall0) * VIDEO_CLOCK_RATE)
        pts = max(pts, self._last_pts + 1)  # RTP time never steps back
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        return frame


class _AudioClockClient(SmallWebRTCClient):
    """SmallWebRTC client that sends video through :class:`AudioClockVideoTrack`."""

    async def _handle_client_connected(self) -> None:
        params: TransportParams | None = self._params
        if params is None or not params.video_out_enabled:
            await super()._handle_client_connected()
            return
        # install our track before Pipecat would install its RawVideoTrack (its sender must never wait on one)
        track = AudioClockVideoTrack(params.video_out_width, params.video_out_height)
        self._video_output_track = track  # type: ignore[assignment]  # Pipecat types it None
        self._webrtc_connection.replace_video_track(track)
        self._params = params.model_copy(update={"video_out_enabled": False})  # type: ignore[assignment]
        try:
            await super()._handle_client_connected()
        finally:
            self._params = params  # type: ignore[assignment]
            self._video_output_track = track  # type: ignore[assignment]


class SplatSmallWebRTCTransport(SmallWebRTCTransport):
    """A drop-in ``SmallWebRTCTransport`` whose video RTP time follows the frames' pts (the audio clock).

    Use it in place of ``SmallWebRTCTransport`` to keep 25 FPS video in sync;
    everything else is Pipecat's transport unchanged.
    """

    def __init__(
        self,
        webrtc_connection: SmallWebRTCConnection,
        params: TransportParams,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        super().__init__(webrtc_connection, params, input_name=input_name, output_name=output_name)
        self._client = _AudioClockClient(webrtc_connection, self._callbacks)


def avatar_transport_params(fps: int = 25, size: int = 512, **overrides: Any) -> TransportParams:
    """TransportParams for a bot with a SplatAvatarService face (audio in/out, live video out)."""
    values: dict[str, Any] = {
        "audio_in_enabled": True,
        "audio_out_enabled": True,
        "audio_out_sample_rate": OUTPUT_SAMPLE_RATE,
        "video_out_enabled": True,
        "video_out_is_live": True,
        "video_out_width": size,
        "video_out_height": size,
        "video_out_framerate": fps,
    }
    values.update(overrides)
    return TransportParams(**values)

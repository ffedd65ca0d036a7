"""Sender-side A/V sync of SplatAvatarService over SmallWebRTC: when each frame's image and audio leave.

Runs Piper → SplatAvatarService → SplatSmallWebRTCTransport in this process
with an aiortc peer on loopback, and records, at the transport's two tracks,
the wall time each video frame is handed to the encoder (by its pts) and the
time the first 10 ms of each speech frame's audio is (matched by content).
Receivers synchronise "as sent", so ``audio_minus_video_ms`` per frame is the
lip-sync error the listener gets (positive: the voice comes after its image)::

    python -m benchmarks.pipecat_sync --size 128 --json build/bench-pipecat-sync.json
    python -m benchmarks.pipecat_sync --audio-delay-frames 0   # without the one-frame hold-back
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import print_json
from engines.splat.synthetic import write_synthetic_avatar

TEXT = "Hello! I am a splatcast avatar. My lips move with my voice, and the two leave together."
CHUNK_BYTES = 960  # 10 ms of 48 kHz int16 mono


async def measure(
    avatar: Path, size: int, audio_delay_frames: int, seconds: float, audio_chunks: int = 4
) -> dict[str, Any]:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import RawAudioTrack
    from pipecat.workers.runner import WorkerRunner

    from realtime import pipecat as splat_pipecat
    from realtime.conversation.services import AlignedPiperTTSService, SpeechModels
    from realtime.media.stream import FrameJob

    video_sent: dict[int, float] = {}  # pts (90 kHz) → when the track handed it to the encoder
    audio_sent: list[tuple[float, bytes]] = []  # (when, 10 ms of audio) as the audio track hands it over
    speech_chunks: dict[bytes, int] = {}  # first 10 ms of a speech frame's audio → its frame's pts

    video_recv = splat_pipecat.AudioClockVideoTrack.recv
    audio_recv = RawAudioTrack.recv

    async def timed_video(self: Any) -> Any:
        frame = await video_recv(self)
        video_sent[int(frame.pts or 0)] = time.monotonic()
        return frame

    async def timed_audio(self: Any) -> Any:
        frame = await audio_recv(self)
        audio_sent.append((time.monotonic(), bytes(frame.to_ndarray().tobytes())))
        return frame

    class Recorded(splat_pipecat.SplatAvatarService):
        async def _push_audio(self, job: FrameJob, marks: list[str], reply: Any) -> None:
            if reply is not None:
                head = job.audio[: CHUNK_BYTES // 2].tobytes()
                if any(head):
                    speech_chunks.setdefault(head, job.pts)
            await super()._push_audio(job, marks, reply)

    splat_pipecat.AudioClockVideoTrack.recv = timed_video  # type: ignore[method-assign]
    RawAudioTrack.recv = timed_audio  # type: ignore[method-assign]
    models = await asyncio.to_thread(SpeechModels.load)
    client = RTCPeerConnection()
    client.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    client.addTransceiver("video", direction="recvonly")
    drains: list[asyncio.Task[None]] = []

    @client.on("track")
    def _on_track(track: Any) -> None:
        async def drain() -> None:
            while True:
                await track.recv()

        drains.append(asyncio.create_task(drain()))

    await client.setLocalDescription(await client.createOffer())
    connection = SmallWebRTCConnection()
    await connection.initialize(sdp=client.localDescription.sdp, type="offer")
    answer = connection.get_answer()
    assert answer is not None
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    params = splat_pipecat.avatar_transport_params(fps=25, size=size, audio_out_10ms_chunks=audio_chunks)
    transport = splat_pipecat.SplatSmallWebRTCTransport(connection, params)
    service = Recorded(avatar=avatar, size=size, audio_delay_frames=audio_delay_frames)
    worker = PipelineWorker(
        Pipeline([AlignedPiperTTSService(models), service, transport.output()]),
        params=PipelineParams(audio_out_sample_rate=48_000),
        idle_timeout_secs=None,
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
    )

    @transport.event_handler("on_client_connected")
    async def _connected(_t: Any, _c: Any) -> None:
        await asyncio.sleep(1.0)
        await worker.queue_frame(TTSSpeakFrame(TEXT))

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    await asyncio.sleep(seconds)
    await worker.cancel()
    await asyncio.gather(run, return_exceptions=True)
    for task in drains:
        task.cancel()
    await client.close()
    await connection.disconnect()
    splat_pipecat.AudioClockVideoTrack.recv = video_recv  # type: ignore[method-assign]
    RawAudioTrack.recv = audio_recv  # type: ignore[method-assign]

    offsets = []
    for when, chunk in audio_sent:
        pts = speech_chunks.get(chunk)
        if pts is not None and pts in video_sent:
            offsets.append((when - video_sent[pts]) * 1000.0)
    arr = np.array(offsets)
    return {
        "size": size,
        "audio_delay_frames": audio_delay_frames,
        "audio_out_10ms_chunks": audio_chunks,
        "speech_frames_matched": len(arr),
        "audio_minus_video_ms": {
            "median": round(float(np.median(arr)), 1) if len(arr) else None,
            "p5": round(float(np.percentile(arr, 5)), 1) if len(arr) else None,
            "p95": round(float(np.percentile(arr, 95)), 1) if len(arr) else None,
        },
        "images": service.stats.images,
        "late": service.stats.late,
        "repeated": service.stats.repeated,
        "audio_to_first_image_ms": [round(s * 1000.0, 1) for s in service.stats.first_audio_to_image_s],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--audio-delay-frames", dest="audio_delay_frames", type=int, default=1)
    parser.add_argument(
        "--audio-chunks", dest="audio_chunks", type=int, default=4, help="audio_out_10ms_chunks"
    )
    parser.add_argument("--avatar", type=Path, default=None, help="default: a synthetic test avatar")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        avatar = args.avatar
        if avatar is None:
            avatar = Path(tmp) / "synthetic.safetensors"
            write_synthetic_avatar(avatar)
        result = asyncio.run(
            measure(avatar, args.size, args.audio_delay_frames, args.seconds, args.audio_chunks)
        )
    print_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``bench load``'s clients: they record arrival times without the per-frame image analysis other
benchmarks read (``analyse_video=False``), and each step says what the clients cost on the shared cores."""

from __future__ import annotations

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from benchmarks.load import _bench_cost, _bench_cpu_s
from benchmarks.webrtc_client import Client


class _Frames(MediaStreamTrack):
    """A received video track: ``n`` frames of changing gray levels, then the end of the stream."""

    kind = "video"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.k = n, 0

    async def recv(self) -> VideoFrame:
        if self.k >= self.n:
            raise MediaStreamError
        frame = VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * self.k, np.uint8), format="rgb24")
        frame.pts = self.k
        self.k += 1
        return frame


async def _receive(analyse_video: bool) -> Client:
    client = Client("http://127.0.0.1:9", mouth_box=(0, 0, 8, 8), analyse_video=analyse_video)
    try:
        await client._video(_Frames(3))
    finally:
        await client.close(delete=False)
    return client


async def test_analysing_client_records_mouth_and_frame_differences() -> None:
    c = await _receive(analyse_video=True)
    assert len(c.rx.video_t) == 3 and c.rx.video_pts == [0, 1, 2]
    assert len(c.rx.mouth) == 3
    assert c.rx.video_diff[0] == -1.0 and min(c.rx.video_diff[1:]) > 0  # the gray level changed


async def test_load_client_keeps_arrival_times_only() -> None:
    c = await _receive(analyse_video=False)
    assert len(c.rx.video_t) == 3 and c.rx.video_pts == [0, 1, 2]
    assert c.last_frame is not None and c.last_frame.pts == 2
    assert c.rx.mouth == [] and c.rx.video_diff == []


def test_bench_cpu_counts_this_process() -> None:
    before = _bench_cpu_s()
    x = 0
    for i in range(2_000_000):  # burn some CPU on this (the main) thread
        x += i
    after = _bench_cpu_s()
    assert after["total"] > before["total"]
    assert after["loop"] > before["loop"]  # the main thread: where the clients' event loop runs
    assert after["video_decode"] == before["video_decode"] == 0.0  # no aiortc decoder threads here
    assert after["audio_decode"] == before["audio_decode"] == 0.0


def test_bench_cost_per_second_and_per_received_frame() -> None:
    before = {"total": 10.0, "loop": 4.0, "video_decode": 1.0, "audio_decode": 0.5}
    after = {"total": 12.0, "loop": 5.0, "video_decode": 1.5, "audio_decode": 0.75}
    cost = _bench_cost(before, after, seconds=20.0, frames=1000)
    assert cost == {
        "bench_cpu_percent": 10.0,  # 2 s of CPU in 20 s: a tenth of one core
        "bench_cpu_ms_per_frame": 2.0,
        "bench_loop_cpu_percent": 5.0,
        "bench_video_decode_cpu_percent": 2.5,
        "bench_audio_decode_cpu_percent": 1.25,
    }
    assert _bench_cost(before, after, seconds=20.0, frames=0)["bench_cpu_ms_per_frame"] is None

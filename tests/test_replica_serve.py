"""A replica built from a clip streams in a real ``splatcast serve`` session (aiortc client, loopback)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client, fps_between
from engines.create.face_env import FaceEnvError, ensure_env

# builds take a minute or two on an idle 2-core box, many more on a busy one
pytestmark = pytest.mark.timeout(2400)
SIZE = 256
LOUD = 0.01


def _high_pass(x: np.ndarray, t: np.ndarray, window_s: float) -> np.ndarray:
    """``x`` minus its centred moving average over ``window_s`` (samples at times ``t``, edges held)."""
    fps = (len(t) - 1) / max(float(t[-1] - t[0]), 1e-6)
    k = max(3, round(window_s * fps) | 1)
    padded = np.pad(x.astype(np.float64), k // 2, mode="edge")
    return x - np.convolve(padded, np.ones(k) / k, mode="valid")


@pytest.fixture(scope="module")
def replica_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from capture_media import synthetic_capture

    from engines.create.replica import ReplicaOptions, build_replica
    from engines.splat.avatar import save_avatar

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")
    cap = synthetic_capture()
    res = build_replica(cap.video, ReplicaOptions(appearance_frames=6, color_iters=2, personalise_rounds=1))
    return save_avatar(res.avatar, tmp_path_factory.mktemp("replica") / "replica.safetensors")


@pytest.mark.slow
async def test_replica_streams_in_a_serve_session(replica_path: Path) -> None:
    from engines.splat.avatar import load_avatar

    avatar = load_avatar(replica_path)
    # a tight box on the lip line: the opening swaps lips for teeth and cavity there (the whole mouth box's
    # mean hardly moves on a real face, whose teeth are brighter and cavity darker than its lips)
    meta = avatar.metadata
    pts = np.array(meta["inner_lip_upper_px"] + meta["inner_lip_lower_px"] + meta["mouth_corners_px"])
    pts *= SIZE / avatar.camera.width
    x0, x1, yc = pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].mean()
    w = x1 - x0
    box = (int(x0 + 0.2 * w), int(yc - 0.12 * w), int(x1 - 0.2 * w) + 1, int(yc + 0.25 * w) + 1)
    env = {**os.environ, "SPLATCAST_OFFER_RATE_PER_MINUTE": "600"}
    srv = ServerProcess("--avatar", str(replica_path), "--size", str(SIZE), "--capacity", "2", env=env)
    try:
        srv.wait_ready()
        client = Client(srv.base, mouth_box=box)
        try:
            await client.connect()
            await client.wait_video(1)
            await asyncio.sleep(1.5)
            t_say = time.monotonic()
            status, _ = await client.post(
                "say", {"text": "Hello, this is my own face, made from a short video."}
            )
            assert status == 202
            await asyncio.sleep(5.0)
            t_end = time.monotonic()
            # video keeps coming (the frame rate is the benchmarks' business, not this test's)
            assert fps_between(client.rx.video_t, t_end - 5.0, t_end) > 2.0
            loud = [t for t, r in zip(client.rx.audio_t, client.rx.audio_rms, strict=True) if r > LOUD]
            assert loud and loud[0] - t_say < 2.0, "no speech audio arrived"
            vt = np.array(client.rx.video_t)
            # the box's brightness minus its 0.5 s moving average: lips move at syllable rate (3-8 Hz); the
            # head's idle sway (learned from the clip, slow) only drifts the fixed box over the face
            mouth = _high_pass(np.array(client.rx.mouth), vt, 0.5)
            speaking = mouth[(vt > loud[0] + 0.2) & (vt < loud[-1] - 0.2)]
            silent = mouth[(vt > client.rx.video_t[0] + 0.3) & (vt < t_say)]
            assert len(speaking) > 20 and len(silent) > 10
            # the replica's mouth moves while it speaks and rests while it is silent
            assert speaking.std() > 4 * max(silent.std(), 0.15), (speaking.std(), silent.std())
        finally:
            await client.close()
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])

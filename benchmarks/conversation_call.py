"""``splatcast bench conversation --call``: the conversation's latencies inside a live call.

The idle mode (:mod:`benchmarks.conversation`) times the conversation loop on
its own. This mode times the same turns where they happen in production: in
the server process, beside the avatar it renders and streams. It starts a
local ``splatcast serve`` (echo brain, the settings' avatar and size, 512 px by
default) and connects one aiortc client that receives the call's video and
audio and sends its microphone (:class:`benchmarks.webrtc_client.MicTrack`):
silence, then a Piper sentence at 48 kHz on a real-time schedule, then
silence. The user's voice thus crosses WebRTC (Opus, the server's jitter
buffer) before the server's VAD hears it. Measured from the moment the mic
track handed its last voiced 20 ms frame to aiortc (sender and server share
this machine's monotonic clock; events are stamped on receipt over the
session's websocket, about a millisecond late):

* ``speech_end_to_transcript_ms``: → the user ``transcript`` event;
* ``speech_end_to_first_audio_ms``: → ``utterance_queued``, the reply's first
  TTS audio at the avatar (the same point the idle mode times);
* ``speech_end_to_audio_at_client_ms``: → the first loud audio packet of the
  reply received by the client (adds the avatar's lead and the way back);
* ``say_to_first_audio_ms``: ``POST /say`` → first loud audio at the client;
* ``speech_start_to_interrupt_ms``: first voiced frame of a user talking over
  the avatar → the ``interrupted`` event.

And the streaming session itself, while the turns happen (from each turn's
first voiced frame until its reply is done): its worst unique frame rate
(received FPS less the server's repeated frames), p95 frame interval and the
ladder rung it ran at, against a quiet window before the first turn; "no loss"
means the same criteria as ``bench load`` (≥ 24.5 unique FPS, p95 ≤ 60 ms)
and no rung used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import analysis
from benchmarks.conversation import SENTENCES, _summary, _voice_at_48k
from benchmarks.latency import LOUD
from benchmarks.load import MAX_P95_MS, MIN_FPS
from benchmarks.target import BenchError, Target
from benchmarks.webrtc_client import MIC_RATE, Client, MicTrack
from realtime.settings import Settings

QUIET_S = 4.0  # the streaming session's baseline window before the first turn
LEAD_S = 0.6  # silence before each sentence
TAIL_S = 2.5  # silence after it (the reply starts within it)
REPLY_TIMEOUT_S = 15.0
BARGE_IN_TEXT = "Here is a longer answer for you. It goes on for a while, and then for a while longer."


def _event_after(client: Client, t: float, kind: str, **fields: Any) -> float | None:
    """Receive time of the first ``kind`` event after ``t`` whose fields match (None: not yet)."""
    for at, event in client.rx.events:
        if at > t and event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
            return at
    return None


async def _wait_event(client: Client, t: float, kind: str, timeout: float, **fields: Any) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at = _event_after(client, t, kind, **fields)
        if at is not None:
            return at
        await asyncio.sleep(0.01)
    return None


def _loud_after(client: Client, t: float) -> float | None:
    for at, rms in zip(client.rx.audio_t, client.rx.audio_rms, strict=False):
        if at > t and rms > LOUD:
            return at
    return None


def _video_window(client: Client, t0: float, t1: float) -> dict[str, Any]:
    """The streaming session between t0 and t1: unique FPS, p95 interval, worst ladder rung."""
    vt = np.asarray(client.rx.video_t)
    sel = vt[(vt >= t0) & (vt <= t1)]
    stats = [e for at, e in client.rx.events if e.get("type") == "stats" and at <= t1]
    before = [e for at, e in client.rx.events if e.get("type") == "stats" and at <= t0]
    a, b = (before[-1] if before else {}), (stats[-1] if stats else {})
    frames = b.get("frames", 0) - a.get("frames", 0)
    repeated = b.get("repeated", 0) - a.get("repeated", 0)
    within = [e for at, e in client.rx.events if e.get("type") == "stats" and t0 <= at <= t1]
    if sel.size < 2:
        return {
            "received_fps": 0.0,
            "unique_fps": 0.0,
            "frame_interval_p95_ms": None,
            "ladder_level_max": None,
        }
    iv = analysis.interval_stats(sel)
    return {
        "received_fps": iv.fps,
        "unique_fps": iv.fps * (1.0 - (repeated / frames if frames > 0 else 0.0)),
        "frame_interval_p95_ms": iv.p95_ms,
        "repeated": repeated,
        "ladder_level_max": max((e.get("ladder_level") or 0 for e in within), default=b.get("ladder_level")),
    }


async def _run(settings: Settings, repeats: int, progress: bool) -> dict[str, Any]:
    from realtime.conversation.services import SpeechModels

    models = await asyncio.to_thread(SpeechModels.load)  # only to make the user's voice
    voices = [_voice_at_48k(models, s) for s in SENTENCES]
    transcript_ms: list[float] = []
    audio_ms: list[float] = []
    client_audio_ms: list[float] = []
    say_ms: list[float] = []
    barge_ms: list[float] = []
    turns: list[dict[str, Any]] = []
    missed = 0
    with Target(settings.replace(brain="echo"), None) as target:
        mic = MicTrack()
        client = Client(target.base, mic=mic)
        try:
            await client.connect()
            client.watch_events()
            await client.wait_video(1, timeout=60.0)
            await asyncio.sleep(2.0)  # the connection's own start-up
            q0 = time.monotonic()
            await asyncio.sleep(QUIET_S)
            quiet = _video_window(client, q0, time.monotonic())
            for i in tqdm(range(repeats), desc="turns in a call", unit="turn", disable=not progress):
                voice = voices[i % len(voices)]
                lead = int(LEAD_S * MIC_RATE)
                signal = np.concatenate(
                    [np.zeros(lead, np.float32), voice, np.zeros(int(TAIL_S * MIC_RATE), np.float32)]
                )
                first, last = await mic.say(signal, (lead, lead + len(voice) - 1))
                queued = await _wait_event(client, last, "utterance_queued", REPLY_TIMEOUT_S)
                heard = _event_after(client, first, "transcript", role="user")
                done = await _wait_event(client, first, "utterance_done", REPLY_TIMEOUT_S)
                end = done or time.monotonic()
                window = _video_window(client, first, end)
                turn = {"text": SENTENCES[i % len(SENTENCES)], **window}
                if queued is None or heard is None:
                    missed += 1
                else:
                    transcript_ms.append((heard - last) * 1e3)
                    audio_ms.append((queued - last) * 1e3)
                    turn.update(
                        transcript_ms=round((heard - last) * 1e3, 1),
                        first_audio_ms=round((queued - last) * 1e3, 1),
                    )
                    loud = _loud_after(client, queued)
                    if loud is not None:
                        client_audio_ms.append((loud - last) * 1e3)
                turns.append(turn)
                await asyncio.sleep(1.0)
            # say → first audio at the client; then the user talks over the answer (barge-in)
            t_say = time.monotonic()
            status, body = await client.post("say", {"text": BARGE_IN_TEXT})
            if status != 202:
                raise BenchError(f"say answered {status}: {body}")
            for _ in range(500):
                loud = _loud_after(client, t_say)
                if loud is not None:
                    say_ms.append((loud - t_say) * 1e3)
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.8)
            voice = voices[0]
            lead = int(0.1 * MIC_RATE)
            speech = mic.say(
                np.concatenate([np.zeros(lead, np.float32), voice]), (lead, lead + len(voice) - 1)
            )
            with contextlib.suppress(TimeoutError):
                first, _ = await asyncio.wait_for(asyncio.shield(speech), timeout=REPLY_TIMEOUT_S)
                interrupted = await _wait_event(client, first - 0.5, "interrupted", 3.0)
                if interrupted is not None:
                    barge_ms.append((interrupted - first) * 1e3)
        finally:
            await client.close()
        config = dict(target.info)
    worst = [t for t in turns if t.get("unique_fps") is not None]
    fps_min = min((float(t["unique_fps"]) for t in worst), default=None)
    p95_max = max((float(t["frame_interval_p95_ms"] or 0.0) for t in worst), default=None)
    rung_max = max((int(t["ladder_level_max"] or 0) for t in worst), default=None)
    streaming = {
        "quiet": quiet,
        "during_turns_unique_fps_min": fps_min,
        "during_turns_frame_interval_p95_ms_max": p95_max,
        "during_turns_ladder_level_max": rung_max,
        "no_frame_rate_loss": fps_min is not None
        and p95_max is not None
        and fps_min >= MIN_FPS
        and p95_max <= MAX_P95_MS
        and rung_max == 0,
    }
    return {
        "benchmark": "conversation",
        "mode": "call",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        "config": config,
        "speech_end_to_transcript_ms": _summary(transcript_ms),
        "speech_end_to_first_audio_ms": _summary(audio_ms),
        "speech_end_to_audio_at_client_ms": _summary(client_audio_ms),
        "say_to_first_audio_ms": _summary(say_ms),
        "speech_start_to_interrupt_ms": _summary(barge_ms),
        "missed_turns": missed,
        "streaming": streaming,
        "turns": turns,
    }


def run_call_benchmark(settings: Settings, repeats: int = 5, progress: bool = True) -> dict[str, Any]:
    return asyncio.run(_run(settings, repeats, progress))

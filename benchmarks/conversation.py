"""``splatcast bench conversation``: latencies of the conversation loop on the bundled models (no WebRTC).

With ``--call`` the same turns run inside a live 512 px call instead (see
:mod:`benchmarks.conversation_call`); below is the idle mode.

Each repeat starts a fresh :class:`realtime.conversation.Conversation` (echo
brain, models shared as in the server) and plays it a Piper sentence as 48 kHz
mic frames of 20 ms on a real-time schedule, trimmed to the voice, with
silence around it. The avatar is a recorder of the calls (no rendering), so
the figures are the loop's own:

* ``start_ms``: ``Conversation.start()`` (Silero VAD, Smart Turn, pipeline);
* ``speech_end_to_transcript_ms``: last voiced mic frame → the user transcript
  event (VAD stop, Smart Turn, Whisper);
* ``speech_end_to_first_audio_ms``: last voiced mic frame → first TTS chunk at
  the avatar (the above plus brain and the first Piper sentence);
* ``say_to_first_audio_ms``: ``say()`` of two sentences → first chunk;
* ``speech_start_to_interrupt_ms``: first voiced frame of a user who talks
  over the avatar → ``interrupt()`` (barge-in);
* ``rss_per_session_mb``: resident memory added by one more started session.

Medians and percentiles in milliseconds, JSON out. Timings on a shared
machine are noisy: compare medians over several repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from realtime.events import Event, Transcript
from realtime.settings import Settings

logger = logging.getLogger(__name__)

MIC_RATE = 48_000
FRAME = MIC_RATE // 50  # 20 ms
# issue 16 (2-core CPU, 512 px call streaming beside): medians
TARGETS = {
    "speech_end_to_transcript_ms": {"op": "<=", "value": 600.0},
    "speech_end_to_first_audio_ms": {"op": "<=", "value": 800.0},
}
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please tell me what the weather will be like tomorrow.",
    "I would like to book a table for two people.",
    "Can you explain how the avatar moves its lips?",
    "My favourite colour is a deep shade of blue.",
)


class TimingAvatar:
    """Records when each AvatarStream call arrives (monotonic seconds)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def _mark(self, name: str) -> None:
        self.times.setdefault(name, []).append(time.monotonic())

    def first(self, name: str) -> float | None:
        return self.times.get(name, [None])[0]

    def push_tts_audio(self, *_args: Any, **_kwargs: Any) -> bool:
        self._mark("push_tts_audio")
        return True

    def end_utterance(self) -> None:
        self._mark("end_utterance")

    def interrupt(self) -> None:
        self._mark("interrupt")

    def user_pause(self) -> None:
        pass  # a backchannel nod: nothing to time

    def set_user_speaking(self, speaking: bool) -> None:
        self._mark("user_speaking" if speaking else "user_stopped")

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        pass  # no media clock here: the avatar never reports speaking

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        pass


def _voice_at_48k(models: Any, text: str) -> np.ndarray:
    """[N] float32: Piper speech at 48 kHz, trimmed to where the voice is (1% of peak)."""
    import soxr

    chunks = list(models.tts.synthesize(text))
    pcm = np.asarray(soxr.resample(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate, MIC_RATE))
    loud = np.flatnonzero(np.abs(pcm) > 0.01 * np.abs(pcm).max())
    return pcm[loud[0] : loud[-1] + 1].astype(np.float32)


async def _play(conversation: Any, voice: np.ndarray, lead_s: float, tail_s: float) -> tuple[float, float]:
    """Feed silence, the voice, silence on a real-time schedule; (first, last) voiced frame times."""
    signal = np.concatenate(
        [np.zeros(int(lead_s * MIC_RATE), np.float32), voice, np.zeros(int(tail_s * MIC_RATE), np.float32)]
    )
    first_voiced = int(lead_s * MIC_RATE) // FRAME
    last_voiced = (int(lead_s * MIC_RATE) + len(voice) - 1) // FRAME
    start = time.monotonic()
    t_first = t_last = 0.0
    for k in range(len(signal) // FRAME):
        await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        frame = (signal[k * FRAME : (k + 1) * FRAME] * 32767).astype(np.int16)
        await conversation.push_user_audio(frame, MIC_RATE)
        if k == first_voiced:
            t_first = time.monotonic()
        if k == last_voiced:
            t_last = time.monotonic()
    return t_first, t_last


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _summary(values_ms: list[float]) -> dict[str, float | int]:
    arr = np.array(values_ms, dtype=np.float64)
    if arr.size == 0:
        return {"repeats": 0}
    return {
        "median_ms": round(float(np.median(arr)), 1),
        "p90_ms": round(float(np.percentile(arr, 90)), 1),
        "min_ms": round(float(arr.min()), 1),
        "max_ms": round(float(arr.max()), 1),
        "repeats": int(arr.size),
    }


async def _run(settings: Settings, repeats: int) -> dict[str, Any]:
    from realtime.conversation.loop import Conversation
    from realtime.conversation.services import SpeechModels

    t = time.perf_counter()
    models = await asyncio.to_thread(SpeechModels.load)
    load_ms = (time.perf_counter() - t) * 1e3
    # warm-up: first calls of Whisper and Piper allocate their buffers
    await asyncio.to_thread(models.stt.transcribe, np.zeros(16_000, np.float32))
    voices = [_voice_at_48k(models, s) for s in SENTENCES]

    start_ms: list[float] = []
    transcript_ms: list[float] = []
    audio_ms: list[float] = []
    say_ms: list[float] = []
    barge_ms: list[float] = []
    missed = 0
    for i in tqdm(range(repeats), desc="conversation turns", unit="turn"):
        avatar = TimingAvatar()
        transcript_at: list[float] = []

        def on_event(event: Event, seen: list[float] = transcript_at) -> None:
            if isinstance(event, Transcript) and event.role == "user":
                seen.append(time.monotonic())

        conversation = Conversation(settings.replace(brain="echo"), avatar, on_event, models=models)
        t = time.perf_counter()
        await conversation.start()
        start_ms.append((time.perf_counter() - t) * 1e3)
        try:
            _, speech_end = await _play(conversation, voices[i % len(voices)], lead_s=0.6, tail_s=3.0)
            deadline = time.monotonic() + 10.0
            while avatar.first("push_tts_audio") is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            first_audio = avatar.first("push_tts_audio")
            if transcript_at and first_audio:
                transcript_ms.append((transcript_at[0] - speech_end) * 1e3)
                audio_ms.append((first_audio - speech_end) * 1e3)
            else:
                missed += 1

            # say → first audio, then a user talking over it
            before = len(avatar.times.get("push_tts_audio", []))
            t_say = time.monotonic()
            await conversation.say("Here is a longer answer for you. It goes on for a while.")
            for _ in range(500):
                if len(avatar.times.get("push_tts_audio", [])) > before:
                    break
                await asyncio.sleep(0.01)
            say_ms.append((avatar.times["push_tts_audio"][before] - t_say) * 1e3)
            n_interrupts = len(avatar.times.get("interrupt", []))
            speech_start, _ = await _play(conversation, voices[(i + 1) % len(voices)], lead_s=0.3, tail_s=0.5)
            interrupts = avatar.times.get("interrupt", [])[n_interrupts:]
            if interrupts:
                barge_ms.append((interrupts[0] - speech_start) * 1e3)
        finally:
            await conversation.stop()

    rss0 = _rss_mb()
    extra = [
        Conversation(settings.replace(brain="echo"), TimingAvatar(), lambda e: None, models=models)
        for _ in range(3)
    ]
    for c in extra:
        await c.start()
    rss1 = _rss_mb()
    for c in extra:
        await c.stop()

    return {
        "benchmark": "conversation",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "models_load_ms": round(load_ms, 1),
        "start_ms": _summary(start_ms),
        "speech_end_to_transcript_ms": _summary(transcript_ms),
        "speech_end_to_first_audio_ms": _summary(audio_ms),
        "say_to_first_audio_ms": _summary(say_ms),
        "speech_start_to_interrupt_ms": _summary(barge_ms),
        "missed_turns": missed,
        "rss_per_session_mb": round((rss1 - rss0) / 3, 1) if rss0 is not None and rss1 is not None else None,
    }


def run_benchmark(settings: Settings, repeats: int = 5) -> dict[str, Any]:
    return asyncio.run(_run(settings, repeats))


def bench_conversation_command(settings: Settings, args: argparse.Namespace) -> int:
    load_at_start = os.getloadavg()[0]
    if args.call:
        from benchmarks.conversation_call import run_call_benchmark
        from benchmarks.target import BenchError

        try:
            result = run_call_benchmark(settings, repeats=args.repeats)
        except BenchError as exc:
            print(f"splatcast bench conversation: {exc}", file=sys.stderr)
            return 1
    else:
        result = run_benchmark(settings, repeats=args.repeats)
    result["machine"]["load_avg_1m_at_start"] = load_at_start
    result["targets"] = TARGETS
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if args.call:
        c = result["config"]
        print(
            f"conversation in a {c.get('size')} px call ({result['machine']['cpus']} CPUs, load {load_at_start:.2f})"
        )
    else:
        print(
            f"conversation loop ({result['machine']['cpus']} CPUs, load {load_at_start:.2f}), "
            f"models loaded in {result['models_load_ms']:.0f} ms"
        )
    for key, value in result.items():
        if isinstance(value, dict) and "median_ms" in value:
            target = TARGETS.get(key)
            goal = f"   target p50 ≤ {target['value']:.0f} ms" if target else ""
            print(f"  {key:<34} median {value['median_ms']:8.1f} ms   p90 {value['p90_ms']:8.1f} ms{goal}")
    print(f"  missed turns {result['missed_turns']}", end="")
    if args.call:
        s = result["streaming"]
        print(
            f"; the call while turns ran: ≥ {s['during_turns_unique_fps_min'] or 0:.1f} fresh FPS, p95 interval "
            f"≤ {s['during_turns_frame_interval_p95_ms_max'] or 0:.0f} ms, ladder rung "
            f"{s['during_turns_ladder_level_max']} (quiet: {s['quiet']['unique_fps']:.1f} FPS)"
            f" — {'no frame-rate loss' if s['no_frame_rate_loss'] else 'FRAME-RATE LOSS'}"
        )
    else:
        print(f", memory per session {result['rss_per_session_mb']} MB")
    return 0

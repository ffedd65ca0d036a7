"""``splatcast bench latency``: end-to-end latency, frame pacing and A/V sync, measured at real receivers.

N concurrent aiortc clients connect to a server (a local ``splatcast serve``
unless ``--url``), stay idle for a baseline, then run a scripted exchange
until ``--duration`` is up: ``say`` sentences of different lengths, one of
them interrupted mid-sentence. Everything is measured on the receiving side
from receive timestamps (``time.monotonic()``), except the server-side
``first TTS audio → first frame released`` (``lip_latency`` events /
``splatcast_stage_ms{stage="tts_to_frame"}``), CPU % and RSS (psutil on the
local server's pid) and the stage histograms (``/metrics``, before/after).
See :mod:`benchmarks.analysis` for how mouth opening and A/V offset are
computed and :mod:`benchmarks.report` for the JSON schema.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import analysis
from benchmarks.machine import git_info, machine_info
from benchmarks.metrics_scrape import cpu_cost, stage_summaries
from benchmarks.replicas import Replicas
from benchmarks.report import ReportError, finish, new_report, write_outputs
from benchmarks.target import BenchError, Target
from benchmarks.webrtc_client import Client
from realtime.settings import Settings

logger = logging.getLogger(__name__)

# sentences of different lengths (one Piper sentence each, so one utterance each)
SENTENCES = (
    "Hello there!",
    "I am a Gaussian splat avatar, and I talk to you in real time.",
    "Yes.",
    "This is a longer answer, so that the mouth moves through many different shapes before it stops again.",
    "How can I help you today?",
)
INTERRUPTED = (
    "This is a long answer that I will not get to finish, because you are going to interrupt me "
    "somewhere in the middle of it, which is fine."
)
LOUD = 0.01  # packet RMS above this is speech (Piper speech packets are ~0.05-0.2, silence is 0)
IDLE_BASELINE_S = 2.0
QUIET_AFTER_S = 0.6  # an utterance has ended when the audio stays quiet this long
PAUSE_S = 0.8
UTTERANCE_TIMEOUT_S = 20.0
INTERRUPT_AFTER_S = 1.0

TARGETS = {
    "received_fps_min": {"op": ">=", "value": 25.0 - 0.5},
    "repeated_frames_pct": {"op": "<=", "value": 1.0},
    "tts_to_first_frame_ms_p50": {"op": "<=", "value": 150.0},
    "tts_to_first_frame_ms_max": {"op": "<=", "value": 150.0},
    "av_offset_ms": {"op": "abs<=", "value": 40.0},
    "say_to_first_audio_ms_p50": {"op": "<=", "value": 400.0},
    "say_to_first_audio_ms_p95": {"op": "<=", "value": 400.0},
    "interrupt_to_silence_ms_max": {"op": "<=", "value": 150.0},
    "frame_interval_p95_ms": {"op": "<=", "value": 60.0},
}


@dataclass
class Say:
    text: str
    t: float  # monotonic time the say request was sent
    interrupted_at: float | None = None


@dataclass
class Run:
    client: Client
    says: list[Say] = field(default_factory=list)
    first_frame_at: float | None = None
    idle_until: float | None = None
    ended_at: float | None = None
    error: str | None = None


async def _wait_audio(client: Client, after: float, timeout: float) -> float | None:
    """Receive time of the first loud packet after ``after`` (None on timeout)."""
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        t, r = client.rx.audio_t, client.rx.audio_rms
        while i < len(t):
            if t[i] > after and r[i] > LOUD:
                return t[i]
            i += 1
        await asyncio.sleep(0.02)
    return None


async def _wait_quiet(client: Client, quiet_s: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t, r = client.rx.audio_t, client.rx.audio_rms
        recent = [rr for tt, rr in zip(t[-60:], r[-60:], strict=False) if tt > time.monotonic() - quiet_s]
        if len(recent) >= int(quiet_s / 0.02) - 2 and max(recent) <= LOUD:
            return
        await asyncio.sleep(0.05)


async def run_script(
    run: Run,
    duration_s: float,
    offset_s: float,
    connect_timeout: float,
    on_connect: Callable[[str], Awaitable[Any]] | None = None,
) -> None:
    """Connect, idle baseline, then say/interrupt until ``duration_s`` after the first frame.
    ``on_connect(session_id)`` runs once the session exists (e.g. to find its replica)."""
    c = run.client
    await asyncio.sleep(offset_s)
    await c.connect()
    c.watch_events()
    if on_connect is not None and c.session_id is not None:
        await on_connect(c.session_id)
    await c.wait_video(1, timeout=connect_timeout)
    run.first_frame_at = c.rx.video_t[0]
    await asyncio.sleep(IDLE_BASELINE_S)
    run.idle_until = time.monotonic()
    end = run.first_frame_at + duration_s
    script = [SENTENCES[0], INTERRUPTED, *SENTENCES[1:]]  # the interrupt early, so short runs have one
    i = 0
    while time.monotonic() < end - 1.0:
        text = script[i % len(script)]
        i += 1
        say = Say(text, time.monotonic())
        status, body = await c.post("say", {"text": text})
        if status != 202:
            raise BenchError(f"say answered {status}: {body}")
        run.says.append(say)
        heard = await _wait_audio(c, say.t, UTTERANCE_TIMEOUT_S)
        if heard is None:
            logger.warning("bench: no audio %.0f s after say %r", UTTERANCE_TIMEOUT_S, text[:30])
            continue
        if text is INTERRUPTED:
            await asyncio.sleep(INTERRUPT_AFTER_S)
            say.interrupted_at = time.monotonic()
            await c.post("interrupt")
            await asyncio.sleep(1.5)
        else:
            await _wait_quiet(c, QUIET_AFTER_S, UTTERANCE_TIMEOUT_S)
            await asyncio.sleep(PAUSE_S)
    run.ended_at = time.monotonic()


# --- analysis of one session -------------------------------------------------------------------------
def _last_stats(
    events: Sequence[tuple[float, dict[str, Any]]], before: float | None = None
) -> dict[str, Any]:
    stats = [e for t, e in events if e.get("type") == "stats" and (before is None or t <= before)]
    return stats[-1] if stats else {}


def _near(t: np.ndarray, events: np.ndarray, within: float) -> np.ndarray:  # [len(t)] bool
    """Which times ``t`` lie within ``within`` seconds of some time in sorted ``events``."""
    if events.size == 0:
        return np.zeros(t.size, bool)
    i = np.clip(np.searchsorted(events, t), 1, events.size - 1) if events.size > 1 else np.zeros(t.size, int)
    d = np.minimum(np.abs(t - events[i]), np.abs(t - events[np.maximum(i - 1, 0)]))
    return np.asarray(d <= within)


def _unique_fps(events: Sequence[tuple[float, dict[str, Any]]], t0: float) -> list[tuple[float, float]]:
    """(s since t0, frames/s the server rendered rather than repeated) between consecutive stats events."""
    stats = [(t, e) for t, e in events if e.get("type") == "stats"]
    out = []
    for (ta, a), (tb, b) in itertools.pairwise(stats):
        if tb > ta:
            unique = (b["frames"] - a["frames"]) - (b["repeated"] - a["repeated"])
            out.append((round(tb - t0, 3), unique / (tb - ta)))
    return out


def analyse_session(run: Run, fps: int) -> dict[str, Any]:
    """Per-session figures and the raw series the plots need."""
    rx = run.client.rx
    if run.first_frame_at is None or len(rx.video_t) < 10:
        raise BenchError(f"session received only {len(rx.video_t)} frames")
    vt = np.asarray(rx.video_t)
    at, ar = np.asarray(rx.audio_t), np.asarray(rx.audio_rms)
    start = run.first_frame_at + 1.0  # the first second holds the connection's own start-up
    end = run.ended_at or float(vt[-1])
    win = (vt >= start) & (vt <= end)
    iv = analysis.interval_stats(vt[win])
    intervals_ms = np.diff(vt[win]) * 1000.0
    step = 90_000 // fps
    pts = np.asarray(rx.video_pts)[win]
    diffs = np.asarray(rx.video_diff)[win]
    stats_end = _last_stats(rx.events)
    stats_start = _last_stats(rx.events, before=start)
    frames = stats_end.get("frames", 0) - stats_start.get("frames", 0)
    repeated = stats_end.get("repeated", 0) - stats_start.get("repeated", 0)

    # per utterance: say → first audio, say → mouth open (pixels), interrupt → silence
    says = run.says
    say_audio: list[float | None] = []
    say_tts: list[float | None] = []  # say → the reply's first TTS audio reached AvatarStream (event receive)
    say_mouth: list[float | None] = []
    interrupt_ms: list[float] = []
    mouth = np.asarray(rx.mouth) if rx.mouth else None
    baseline = None
    if mouth is not None and len(mouth) == len(vt) and run.idle_until is not None:
        idle = mouth[(vt > run.first_frame_at + 0.5) & (vt < run.idle_until)]
        speaking = mouth[_near(vt, at[ar > LOUD], 0.04)]
        with contextlib.suppress(analysis.AnalysisError):
            baseline = analysis.mouth_baseline(idle, np.asarray(speaking))
    for j, say in enumerate(says):
        until = says[j + 1].t if j + 1 < len(says) else end
        loud = np.flatnonzero((at > say.t) & (at < until) & (ar > LOUD))
        first_audio = float(at[loud[0]]) if loud.size else None
        say_audio.append(None if first_audio is None else (first_audio - say.t) * 1000.0)
        queued = [t for t, e in rx.events if e.get("type") == "utterance_queued" and say.t < t < until]
        say_tts.append((queued[0] - say.t) * 1000.0 if queued else None)
        onset = None
        if baseline is not None and mouth is not None:
            onset = analysis.mouth_open_onset(vt, mouth, baseline, after=say.t, until=until)
        say_mouth.append(None if onset is None else (onset - say.t) * 1000.0)
        if say.interrupted_at is not None:
            after = (at > say.interrupted_at) & (at < until) & (ar > LOUD)
            interrupt_ms.append(
                float((at[after].max() - say.interrupted_at) * 1000.0) if after.any() else 0.0
            )

    # A/V offset over the talking part
    av: dict[str, Any] = {"raw_ms": None, "corrected_ms": None, "corr": None}
    curve = None
    if baseline is not None and mouth is not None and says:
        sel = (vt >= says[0].t) & (vt <= end)
        env = analysis.envelope_on_frames(vt[sel], at, ar)
        mids = np.append((vt[sel][:-1] + vt[sel][1:]) / 2.0, vt[sel][-1] + 0.5 / fps)
        try:
            off = analysis.av_offset(vt[sel], baseline.signal(mouth[sel]), mids, env)
            av = {
                "raw_ms": off.lag_ms,
                "corrected_ms": off.lag_ms - analysis.AIORTC_AUDIO_DELAY_MS,
                "corr": off.corr,
            }
            curve = {"lags_ms": off.lags_ms[::2], "corr": off.curve[::2], "peak_ms": off.lag_ms}
        except analysis.AnalysisError as exc:
            logger.warning("bench: no A/V offset for this session: %s", exc)

    lip = [float(e["ms"]) for _, e in rx.events if e.get("type") == "lip_latency"]
    return {
        "session_id": run.client.session_id,
        "connect_to_first_frame_ms": (run.first_frame_at - (run.client.connected_at or 0)) * 1000.0,
        "say_to_first_audio_ms": say_audio,
        "say_to_tts_audio_ms": say_tts,
        "say_to_mouth_open_ms": say_mouth,
        "tts_to_first_frame_ms": lip,
        "interrupt_to_silence_ms": interrupt_ms,
        "received_fps": iv.fps,
        "frame_interval_ms": {"p50": iv.p50_ms, "p95": iv.p95_ms, "p99": iv.p99_ms, "max": iv.max_ms},
        "frames_received": int(win.sum()),
        "server_frames": frames,
        "repeated_frames": repeated,
        "repeated_frames_pct": 100.0 * repeated / frames if frames else None,
        "dropped_frames": analysis.dropped_frames(pts, step),
        "unchanged_frames_rx": int(np.sum((diffs >= 0) & (diffs < 0.05))),
        "audio_gaps_rx": analysis.audio_gaps(at[(at >= start) & (at <= end)]),
        "audio_gap_packets_server": stats_end.get("audio_gap_packets", 0)
        - stats_start.get("audio_gap_packets", 0),
        "ladder_level_end": stats_end.get("ladder_level"),
        "av_offset_ms": av,
        "mouth_baseline": None
        if baseline is None
        else {"median": baseline.median, "mad": baseline.mad, "sign": baseline.sign},
        "says": [{"text": s.text, "interrupted": s.interrupted_at is not None} for s in says],
        "_series": {
            "signals": {  # for inspection: frame receive times (s from the first frame), mouth box luma, envelope
                "t": np.round(vt - run.first_frame_at, 4),
                "mouth_luma": np.round(mouth, 3) if mouth is not None else [],
                "audio_envelope": np.round(analysis.envelope_on_frames(vt, at, ar), 5),
                "says_t": [round(s.t - run.first_frame_at, 4) for s in says],
            },
            "intervals_ms": intervals_ms,
            "fps_per_second": analysis.fps_series(vt, run.first_frame_at, end),
            "unique_fps_per_second": _unique_fps(rx.events, run.first_frame_at),
            "av_curve": curve,
        },
    }


def _values(sessions: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(v) for s in sessions for v in s[key] if v is not None]


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summarise(sessions: Sequence[dict[str, Any]], server: dict[str, Any]) -> dict[str, float | None]:
    say_audio = _values(sessions, "say_to_first_audio_ms")
    say_mouth = _values(sessions, "say_to_mouth_open_ms")
    lip = _values(sessions, "tts_to_first_frame_ms")
    interrupts = _values(sessions, "interrupt_to_silence_ms")
    offsets = [
        s["av_offset_ms"]["corrected_ms"] for s in sessions if s["av_offset_ms"]["corrected_ms"] is not None
    ]
    corrs = [s["av_offset_ms"]["corr"] for s in sessions if s["av_offset_ms"]["corr"] is not None]
    raw = [s["av_offset_ms"]["raw_ms"] for s in sessions if s["av_offset_ms"]["raw_ms"] is not None]
    repeated = [s["repeated_frames_pct"] for s in sessions if s["repeated_frames_pct"] is not None]
    stages = server.get("stages", {})

    def stage(name: str, q: str) -> float | None:
        v = stages.get(name, {}).get(q)
        return None if v is None else float(v)

    av = float(np.median(offsets)) if offsets else None
    return {
        "sessions": float(len(sessions)),
        "connect_to_first_frame_ms": float(np.median([s["connect_to_first_frame_ms"] for s in sessions])),
        "say_to_first_audio_ms_p50": _pct(say_audio, 50),
        "say_to_first_audio_ms_p95": _pct(say_audio, 95),
        "say_to_tts_audio_ms_p50": _pct(_values(sessions, "say_to_tts_audio_ms"), 50),
        "say_to_mouth_open_ms_p50": _pct(say_mouth, 50),
        "say_to_mouth_open_ms_p95": _pct(say_mouth, 95),
        "tts_to_first_frame_ms_p50": _pct(lip, 50),
        "tts_to_first_frame_ms_max": max(lip) if lip else None,
        "received_fps_min": min(s["received_fps"] for s in sessions),
        "frame_interval_p50_ms": max(s["frame_interval_ms"]["p50"] for s in sessions),
        "frame_interval_p95_ms": max(s["frame_interval_ms"]["p95"] for s in sessions),
        "frame_interval_p99_ms": max(s["frame_interval_ms"]["p99"] for s in sessions),
        "repeated_frames_pct": max(repeated) if repeated else None,
        "dropped_frames": float(sum(s["dropped_frames"] for s in sessions)),
        "audio_gap_packets": float(sum(s["audio_gap_packets_server"] for s in sessions)),
        "audio_gaps_rx": float(sum(s["audio_gaps_rx"] for s in sessions)),
        "av_offset_raw_ms": float(np.median(raw)) if raw else None,
        "av_offset_ms": av,
        "av_offset_abs_ms": None if av is None else abs(av),
        "av_offset_corr": float(np.median(corrs)) if corrs else None,  # how clear the peak was (0..1)
        "interrupt_to_silence_ms_max": max(interrupts) if interrupts else None,
        "server_cpu_percent_mean": server.get("cpu_percent_mean"),
        "server_rss_mb_max": server.get("rss_mb_max"),
        "server_cpu_ms_per_frame": server.get("server_cpu_ms_per_frame"),
        # only meaningful when the run held full rate at full quality (else the server did less work per frame)
        "cpu_bound_capacity_estimate": server.get("cpu_bound_capacity_estimate")
        if all(s["ladder_level_end"] == 0 for s in sessions) and repeated and max(repeated) <= 5.0
        else None,
        "render_ms_p50": stage("render", "p50_ms"),
        "render_ms_p95": stage("render", "p95_ms"),
        "encode_ms_p50": stage("encode", "p50_ms"),
        "motion_ms_p50": stage("motion", "p50_ms"),
        "frame_lateness_ms_p95": stage("frame_lateness", "p95_ms"),
    }


async def measure(target: Target, sessions: int, duration_s: float, progress: bool = True) -> dict[str, Any]:
    """Run the scripted exchange on ``sessions`` clients; returns the report body (no I/O)."""
    from tqdm import tqdm

    runs = [
        Run(Client(target.base, mouth_box=target.mouth_box, api_token=target.api_token))
        for _ in range(sessions)
    ]
    probe = Client(target.base, api_token=target.api_token)
    # each replica's /metrics from when it got its first session to the end (one replica: the server)
    replicas = Replicas(probe.get)
    t_start = time.monotonic()
    tasks = [
        asyncio.create_task(
            run_script(r, duration_s, 0.3 * i, connect_timeout=60.0, on_connect=replicas.locate)
        )
        for i, r in enumerate(runs)
    ]
    bar = tqdm(total=round(duration_s), unit="s", desc="bench latency", disable=not progress, file=sys.stderr)
    try:
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            firsts = [r.first_frame_at for r in runs if r.first_frame_at is not None]
            if firsts:
                bar.n = min(round(duration_s), int(time.monotonic() - min(firsts)))
                says = sum(len(r.says) for r in runs)
                bar.set_postfix_str(f"{len(firsts)}/{sessions} connected, {says} says")
                bar.refresh()
        for r, t in zip(runs, tasks, strict=True):
            if t.exception() is not None:
                r.error = f"{type(t.exception()).__name__}: {t.exception()}"
    finally:
        bar.close()
        after_by_replica = await replicas.scrape()
        t_end = time.monotonic()
        for r in runs:
            await r.client.close()
        await probe.close()
    failed = [r.error for r in runs if r.error]
    if len(failed) == len(runs):
        raise BenchError(f"every session failed: {failed[0]}")
    done = [r for r in runs if r.error is None]
    per_session = [analyse_session(r, target.settings.fps) for r in done]
    first = {r.name: r.first_scrape for r in replicas.by_name.values() if r.first_scrape is not None}
    after = Replicas.merged({name: s for name, s in after_by_replica.items() if name in first})
    before = Replicas.merged({name: s for name, s in first.items() if name in after_by_replica})
    server: dict[str, Any] = {"cpu_percent_mean": None, "cpu_percent_max": None, "rss_mb_max": None}
    server["replicas"] = replicas.summary()
    if target.sampler is not None:
        server.update(target.sampler.samples.window(t_start, t_end))
    server["stages"] = stage_summaries(after, before) if after is not None else {}
    server["gauges"] = after.gauges if after is not None else {}
    server.update(
        cpu_cost(
            server["cpu_percent_mean"],
            before,
            after,
            t_end - t_start,
            os.cpu_count() or 1,
            target.settings.fps,
        )
    )
    series = {
        "frame_intervals_ms": np.concatenate([s["_series"]["intervals_ms"] for s in per_session]),
        "fps_per_second": [s["_series"]["fps_per_second"] for s in per_session],
        "unique_fps_per_second": [s["_series"]["unique_fps_per_second"] for s in per_session],
        "av_curves": [s["_series"]["av_curve"] for s in per_session],
        "signals": [s["_series"]["signals"] for s in per_session],
    }
    for key in (
        "say_to_first_audio_ms",
        "say_to_mouth_open_ms",
        "tts_to_first_frame_ms",
        "interrupt_to_silence_ms",
    ):
        series[key] = _values(per_session, key)
    series["connect_to_first_frame_ms"] = [s["connect_to_first_frame_ms"] for s in per_session]
    for s in per_session:
        del s["_series"]
    return {
        "summary": summarise(per_session, server),
        "sessions": per_session,
        "failed_sessions": failed,
        "server": server,
        "series": series,
    }


def bench_latency_command(settings: Settings, args: argparse.Namespace) -> int:
    sessions = 1 if args.sessions is None else args.sessions
    if sessions < 1 or args.duration < 5:
        print("splatcast bench latency: need --sessions >= 1 and --duration >= 5", file=sys.stderr)
        return 2
    command = "splatcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = {**machine_info(), "git": git_info()}  # before the run: load average and the code measured
    try:
        with Target(settings, args.url, args.replicas) as target:
            body = asyncio.run(measure(target, sessions, args.duration))
            config = {**target.info, "sessions": sessions, "duration_s": args.duration}
        report = new_report("latency", command, config, machine)
        report.update(body)
        report["targets"] = TARGETS
        md, regressions = write_outputs(report, args.json_out, args.report, args.compare)
    except (BenchError, ReportError) as exc:
        print(f"splatcast bench latency: {exc}", file=sys.stderr)
        return 1
    print(md)
    plots = [f"{Path(args.report) / 'latency.md'} and plots in {args.report}"] if args.report else []
    return finish(regressions, args.json_out, *plots)

"""``splatcast bench load``: add talking sessions one at a time until one of them cannot hold 25 FPS.

Against one server (a local ``splatcast serve`` with admission control lifted
to ``--capacity 64``, or ``--url``), step ``n = 1, 2, ...``: connect one more
aiortc client, let every client keep talking (``say`` sentence after
sentence), warm up, then measure for ``--duration`` seconds (at least
three steps are measured, past a failure too, so the capacity curve has a
shape). A step fails
when any session's *unique* frame rate — received FPS × (1 − the share of
frames the server repeated because their render missed the deadline) — drops
below 24.5 (25 FPS within measurement tolerance) or its p95 interval between
received frames exceeds 60 ms. The capacity is the last step that passed. A
repeated frame still arrives on time, so received FPS alone would hide an
overloaded renderer: the server's per-session ``repeated`` counter (events
websocket) is what exposes it. Each step also records the server's CPU and
the per-stage time per second from ``/metrics`` (which stage dominates).

Through a balancer (``--url`` of HAProxy written by ``splatcast deploy
haproxy``) the same steps measure all the replicas behind it: each session's
replica is found with ``/healthz?session=ID`` (:mod:`benchmarks.replicas`),
the stage times are the replicas' ``/metrics`` added up, and the run also
stops when the balancer refuses a session (every replica full by its own
admission control). The report lists each replica, the capacity it reports
and the sessions it held at the measured capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import analysis
from benchmarks.arrival_video import ArrivalCounts, arrival_only_vp8
from benchmarks.latency import LOUD, SENTENCES, _last_stats
from benchmarks.machine import git_info, machine_info
from benchmarks.metrics_scrape import cpu_cost, stage_summaries
from benchmarks.replicas import Replicas
from benchmarks.report import ReportError, finish, new_report, write_outputs
from benchmarks.target import BenchError, Target
from benchmarks.webrtc_client import Client
from realtime.settings import Settings

logger = logging.getLogger(__name__)

MIN_FPS = 24.5
MAX_P95_MS = 60.0
WARM_S = 4.0
DEFAULT_MAX_SESSIONS = 16
MIN_STEPS = 3  # measure at least this many steps (past a failure too) so the capacity curve has a shape
BUSY_STAGES = ("render", "encode", "motion")  # per-frame CPU work the server does for each session
# issue 16, on the 2-core reference machine at 512 px: 3 sessions at 25 fresh FPS at full quality (no ladder
# rung used), in at most 20 ms of server CPU per frame
TARGETS = {
    "capacity_sessions": {"op": ">=", "value": 3.0},
    "ladder_level_max_at_capacity": {"op": "<=", "value": 0.0},
    "server_cpu_ms_per_frame_at_capacity": {"op": "<=", "value": 20.0},
}


@dataclass
class Talker:
    client: Client
    task: asyncio.Task[None] | None = None
    says: int = 0
    replica: str | None = None  # which replica owns its session


def _per_replica(talkers: list[Talker]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in talkers:
        if t.replica is not None:
            out[t.replica] = out.get(t.replica, 0) + 1
    return dict(sorted(out.items()))


async def _talk(talker: Talker) -> None:
    """Keep one session talking: say, wait for its audio to end, pause, next sentence."""
    c, i = talker.client, 0
    while True:
        text = SENTENCES[i % len(SENTENCES)]
        i += 1
        t = time.monotonic()
        with contextlib.suppress(Exception):
            await c.post("say", {"text": text})
            talker.says += 1
        # wait for speech to start and end (or give up), then a short pause
        deadline = t + 20.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            recent = [r for tt, r in zip(c.rx.audio_t[-50:], c.rx.audio_rms[-50:], strict=False) if tt > t]
            if recent and max(recent[-25:]) <= LOUD and max(recent) > LOUD:
                break
        await asyncio.sleep(0.5)


def _session_window(c: Client, t0: float, t1: float) -> dict[str, Any]:
    vt = np.asarray(c.rx.video_t)
    sel = vt[(vt >= t0) & (vt <= t1)]
    if sel.size < 2:
        return {
            "received_fps": 0.0,
            "effective_fps": 0.0,
            "frame_interval_p95_ms": None,
            "repeated": None,
            "frames_received": int(sel.size),
        }
    iv = analysis.interval_stats(sel)
    a, b = _last_stats(c.rx.events, before=t0), _last_stats(c.rx.events, before=t1)
    frames = b.get("frames", 0) - a.get("frames", 0)
    repeated = b.get("repeated", 0) - a.get("repeated", 0)
    share = repeated / frames if frames > 0 else 0.0
    within = [e for t, e in c.rx.events if e.get("type") == "stats" and t0 <= t <= t1]
    psnr = [e["video_psnr_db"] for e in within if e.get("video_psnr_db") is not None]
    kbps = [e["video_kbps"] for e in within if e.get("video_kbps") is not None]
    return {
        "received_fps": iv.fps,
        "effective_fps": iv.fps * (1.0 - share),
        "frames_received": int(sel.size),
        "frame_interval_p95_ms": iv.p95_ms,
        "frame_interval_p99_ms": iv.p99_ms,
        "repeated": repeated,
        "server_frames": frames,
        "ladder_level": b.get("ladder_level"),
        # the worst rung any second of the window ran at (0 = full quality throughout)
        "ladder_level_max": max((e.get("ladder_level") or 0 for e in within), default=b.get("ladder_level")),
        "audio_gap_packets": b.get("audio_gap_packets", 0) - a.get("audio_gap_packets", 0),
        # the encoded video against the rendered frames, at the bitrate the call got (None: not reported)
        "video_psnr_db": float(np.mean(psnr)) if psnr else None,
        "video_psnr_db_min": float(np.min(psnr)) if psnr else None,
        "video_kbps": float(np.mean(kbps)) if kbps else None,
        "video_keyframes": (b.get("video_keyframes") or 0) - (a.get("video_keyframes") or 0),
    }


def _bench_cpu_s() -> dict[str, float]:
    """CPU seconds this bench process (its aiortc clients) has used so far: in all, on its event loop's
    thread (RTP, SRTP, jitter buffers, the websocket events) and on aiortc's video and audio decoder threads."""
    import psutil

    proc = psutil.Process()
    times = proc.cpu_times()
    by_thread = {t.id: t.user_time + t.system_time for t in proc.threads()}
    named = {t.native_id: t.name for t in threading.enumerate()}

    def threads(name: str) -> float:
        return sum(v for k, v in by_thread.items() if named.get(k) == name)

    return {
        "total": times.user + times.system,
        "loop": by_thread.get(threading.main_thread().native_id or -1, 0.0),
        "video_decode": threads("video-decoder"),
        "audio_decode": threads("audio-decoder"),  # Opus → PCM: the talkers' ears (when speech ends)
    }


def _bench_cost(
    before: dict[str, float], after: dict[str, float], seconds: float, frames: int
) -> dict[str, float | None]:
    """The clients' own CPU over a step: % of one core, and ms per video frame received (all sessions)."""
    used = {k: after[k] - before[k] for k in after}
    return {
        "bench_cpu_percent": 100.0 * used["total"] / seconds,
        "bench_cpu_ms_per_frame": 1000.0 * used["total"] / frames if frames else None,
        "bench_loop_cpu_percent": 100.0 * used["loop"] / seconds,
        "bench_video_decode_cpu_percent": 100.0 * used["video_decode"] / seconds,
        "bench_audio_decode_cpu_percent": 100.0 * used["audio_decode"] / seconds,
    }


def _loop_ms_per_frame(res: dict[str, float | None], cost: dict[str, float | None]) -> float | None:
    """The event loop thread's CPU ms per rendered frame (its share of the process CPU, per frame)."""
    loop, total, per_frame = (
        res.get("loop_cpu_percent_mean"),
        res.get("cpu_percent_mean"),
        cost.get("server_cpu_ms_per_frame"),
    )
    if loop is None or not total or per_frame is None:
        return None
    return per_frame * loop / total


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _cpu_per_frame(
    stages: dict[str, dict[str, float | None]],
    cpu_ms_per_frame: float | None,
    loop_ms_per_frame: float | None,
) -> dict[str, float | None]:
    """Where the server's CPU per rendered frame goes: the render (+ conversion) and the encoder by their
    own threads' CPU time; the event loop by its thread's CPU time (pacing, motion, RTP, SRTP, the
    Pipecat pipelines; motion alone by its time there); speech synthesis (Piper and each chunk's prosody)
    by its threads' CPU time; the rest of the process (aiortc's pool threads' Opus and hand-offs, numba's
    own threads) as the remainder."""

    def per_frame(name: str) -> float | None:
        stage = stages.get(name, {})
        count, mean = stage.get("count") or 0.0, stage.get("mean_ms")
        rendered = (stages.get("render_cpu", {}).get("count") or 0.0) or count
        return None if mean is None or not count or not rendered else float(mean) * count / rendered

    parts = {
        "render": per_frame("render_cpu"),
        "encode": per_frame("encode_cpu"),
        "event_loop": loop_ms_per_frame,
        "tts": per_frame("tts_cpu"),  # Piper (+ prosody) of what the sessions say, on the TTS threads
    }
    known = [v for v in parts.values() if v is not None]
    rest = cpu_ms_per_frame - sum(known) if cpu_ms_per_frame is not None and known else None
    return {**parts, "rest": rest, "total": cpu_ms_per_frame, "motion_on_the_loop": per_frame("motion")}


def _stage_load(stages: dict[str, dict[str, float | None]], seconds: float) -> dict[str, float]:
    """Milliseconds of each stage per second of wall time (1000 = one core busy all the time)."""
    out = {}
    for name in BUSY_STAGES:
        s = stages.get(name, {})
        count, mean = s.get("count") or 0.0, s.get("mean_ms") or 0.0
        out[name] = float(count) * float(mean) / seconds
    return out


async def measure_load(
    target: Target,
    max_sessions: int,
    step_s: float,
    progress: bool = True,
    arrivals: ArrivalCounts | None = None,
) -> dict[str, Any]:
    """``arrivals``: the clients check VP8 frames instead of decoding them (:mod:`benchmarks.arrival_video`)
    and these are their counts; None: they decode."""
    from tqdm import tqdm

    talkers: list[Talker] = []
    probe = Client(target.base, api_token=target.api_token)
    replicas = Replicas(probe.get)  # one (a server) or several (behind a balancer, through --url)
    steps: list[dict[str, Any]] = []
    capacity = 0
    failed_at: int | None = None
    stop_reason = f"reached --sessions {max_sessions}"
    bar = tqdm(total=max_sessions, unit="session", desc="bench load", disable=not progress, file=sys.stderr)
    try:
        for n in range(1, max_sessions + 1):
            # arrival times are all it reads of the video: no per-frame image analysis on the shared cores
            c = Client(target.base, api_token=target.api_token, analyse_video=False)
            try:
                await c.connect()
            except RuntimeError as exc:  # admission control said no (503) or another refusal
                await c.close(delete=False)
                stop_reason = f"session {n} refused: {exc}"
                break
            c.watch_events()
            talker = Talker(c)
            talkers.append(talker)
            await c.wait_video(1, timeout=60.0)
            assert c.session_id is not None
            talker.replica = (await replicas.locate(c.session_id)).name
            talker.task = asyncio.create_task(_talk(talker))
            await asyncio.sleep(WARM_S)
            before = Replicas.merged(await replicas.scrape())
            t0, own0 = time.monotonic(), _bench_cpu_s()
            await asyncio.sleep(step_s)
            t1, own1 = time.monotonic(), _bench_cpu_s()
            after = Replicas.merged(await replicas.scrape())
            await asyncio.sleep(1.2)  # the stats event that covers t1 arrives within a second
            sessions = [_session_window(t.client, t0, t1) for t in talkers]
            stages = stage_summaries(after, before) if after is not None else {}
            res = target.sampler.samples.window(t0, t1) if target.sampler is not None else {}
            p95s = [s["frame_interval_p95_ms"] for s in sessions if s["frame_interval_p95_ms"] is not None]
            psnrs = [s["video_psnr_db"] for s in sessions if s.get("video_psnr_db") is not None]
            kbps = [s["video_kbps"] for s in sessions if s.get("video_kbps") is not None]
            cost = cpu_cost(
                res.get("cpu_percent_mean"), before, after, t1 - t0, os.cpu_count() or 1, target.settings.fps
            )
            step = {
                "sessions": n,
                "replica": talker.replica,  # where the newest session landed
                "sessions_per_replica": _per_replica(talkers),
                "effective_fps_min": min(s["effective_fps"] for s in sessions),
                "received_fps_min": min(s["received_fps"] for s in sessions),
                "frame_interval_p95_ms": max(p95s) if p95s else None,
                "repeated_frames": sum(s["repeated"] or 0 for s in sessions),
                "ladder_level_max": max((s.get("ladder_level_max") or 0) for s in sessions),
                "video_psnr_db_min": min(psnrs) if psnrs else None,
                "video_kbps_mean": float(np.mean(kbps)) if kbps else None,
                "video_keyframes": sum(s.get("video_keyframes") or 0 for s in sessions),
                "server_cpu_percent_mean": res.get("cpu_percent_mean"),
                "server_rss_mb_max": res.get("rss_mb_max"),
                **cost,
                # what the bench's own clients cost on the same cores (they receive, decrypt and decode
                # every session's video: a browser would do that on the viewer's machine)
                **_bench_cost(own0, own1, t1 - t0, sum(s["frames_received"] for s in sessions)),
                "cpu_ms_per_frame_by_stage": _cpu_per_frame(
                    stages, cost["server_cpu_ms_per_frame"], _loop_ms_per_frame(res, cost)
                ),
                "stage_ms_per_s": _stage_load(stages, t1 - t0),
                "stages": stages,
                "per_session": sessions,
            }
            ok = step["effective_fps_min"] >= MIN_FPS and (
                step["frame_interval_p95_ms"] is not None and step["frame_interval_p95_ms"] <= MAX_P95_MS
            )
            step["passed"] = ok
            steps.append(step)
            bar.update(1)
            bar.set_postfix_str(
                f"{n} sessions: {step['effective_fps_min']:.1f} FPS, p95 {step['frame_interval_p95_ms'] or 0:.0f} ms"
            )
            if not ok and failed_at is None:
                failed_at = n
                stop_reason = (
                    f"{n} sessions: worst unique FPS {step['effective_fps_min']:.1f}, "
                    f"worst p95 interval {step['frame_interval_p95_ms'] or float('nan'):.0f} ms"
                )
            if failed_at is None:
                capacity = n
            elif n >= MIN_STEPS:
                break  # past the capacity, with enough points for the curve
    finally:
        bar.close()
        with contextlib.suppress(Exception):  # while their sessions still hold them
            await replicas.refresh()
        for t in talkers:
            if t.task is not None:
                t.task.cancel()
        for t in talkers:
            if t.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t.task
            await t.client.close()
        await probe.close()
    if not steps:
        raise BenchError(f"no step could be measured ({stop_reason})")
    last = steps[capacity] if capacity < len(steps) else steps[-1]  # the first failing step, if any
    busy = last["stage_ms_per_s"]
    dominant = max(busy, key=lambda k: busy[k]) if busy else None
    bottleneck = {
        "at_sessions": last["sessions"],
        "dominant_stage": dominant,
        "stage_ms_per_s": busy,
        "server_cpu_percent_mean": last["server_cpu_percent_mean"],
        "note": "stage ms per second of wall time; 1000 = one core busy; the rest of the server CPU is "
        "the conversation loop (Piper, VAD), aiortc (RTP, Opus) and the event loop",
    }
    cap_step = steps[capacity - 1] if capacity else None
    summary = {
        "capacity_sessions": float(capacity),
        "steps": float(len(steps)),
        "effective_fps_min_at_capacity": cap_step["effective_fps_min"] if cap_step else None,
        "frame_interval_p95_ms_at_capacity": cap_step["frame_interval_p95_ms"] if cap_step else None,
        "server_cpu_percent_at_capacity": cap_step["server_cpu_percent_mean"] if cap_step else None,
        # the bench's own clients on the same cores (% of one core), at the capacity and at the last step
        "bench_cpu_percent_at_capacity": cap_step.get("bench_cpu_percent") if cap_step else None,
        "bench_cpu_percent_last": last.get("bench_cpu_percent"),
        "effective_fps_min_at_failure": None if last["passed"] else last["effective_fps_min"],
        "server_cpu_ms_per_frame_first_step": steps[0].get("server_cpu_ms_per_frame"),
        # from CPU time at one session, when that step held 25 FPS at full quality (else it did less work)
        "cpu_bound_capacity_estimate": steps[0].get("cpu_bound_capacity_estimate")
        if steps[0]["passed"] and steps[0]["ladder_level_max"] == 0
        else None,
        "render_ms_per_s_last": busy.get("render"),
        "encode_ms_per_s_last": busy.get("encode"),
        # the video at the measured capacity: encoded against rendered frames, and the rungs it used
        "video_psnr_db_min_at_capacity": cap_step["video_psnr_db_min"] if cap_step else None,
        "video_kbps_at_capacity": cap_step["video_kbps_mean"] if cap_step else None,
        "ladder_level_max_at_capacity": float(cap_step["ladder_level_max"]) if cap_step else None,
        # server CPU per rendered frame at the capacity step, and its render / encode parts
        "server_cpu_ms_per_frame_at_capacity": cap_step.get("server_cpu_ms_per_frame") if cap_step else None,
        "render_cpu_ms_per_frame_at_capacity": cap_step["cpu_ms_per_frame_by_stage"]["render"]
        if cap_step
        else None,
        "encode_cpu_ms_per_frame_at_capacity": cap_step["cpu_ms_per_frame_by_stage"]["encode"]
        if cap_step
        else None,
        # behind a balancer: how many replicas took sessions, and the capacity they report (agent check)
        "replicas": float(len(replicas.by_name)),
        "replica_capacity_total": float(sum(r.capacity for r in replicas.by_name.values())),
        # the clients' video, when they checked each complete VP8 frame's header instead of decoding it
        "client_video_frames_checked": None if arrivals is None else float(arrivals.frames),
        "client_video_frames_malformed": None if arrivals is None else float(arrivals.malformed),
    }
    at_capacity = _per_replica(talkers[:capacity])
    per_replica = [
        {**r, "sessions_at_capacity": at_capacity.get(r["replica"], 0)} for r in replicas.summary()
    ]
    return {
        "summary": summary,
        "steps": steps,
        "stop_reason": stop_reason,
        "bottleneck": bottleneck,
        "replicas": per_replica,
        "server": {"stages_last_step": last["stages"]},
    }


def bench_load_command(settings: Settings, args: argparse.Namespace) -> int:
    max_sessions = DEFAULT_MAX_SESSIONS if args.sessions is None else args.sessions
    if max_sessions < 1:
        print("splatcast bench load: --sessions (most sessions to try) must be >= 1", file=sys.stderr)
        return 2
    if args.duration < 3:
        print("splatcast bench load: --duration (seconds measured per step) must be >= 3", file=sys.stderr)
        return 2
    command = "splatcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = {**machine_info(), "git": git_info()}  # before the run: load average and the code measured
    try:
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(Target(settings, args.url, args.replicas))
            arrivals = None if args.decode_video else stack.enter_context(arrival_only_vp8())
            body = asyncio.run(measure_load(target, max_sessions, args.duration, arrivals=arrivals))
            config = {
                **target.info,
                "max_sessions": max_sessions,
                "step_s": args.duration,
                "warm_s": WARM_S,
                "criteria": f"unique FPS >= {MIN_FPS} and p95 frame interval <= {MAX_P95_MS:g} ms",
                # False: each complete VP8 frame's header checked and its arrival timed, not decoded
                "client_decodes_video": bool(args.decode_video),
            }
        report = new_report("load", command, config, machine)
        report.update(body)
        report["targets"] = TARGETS
        md, regressions = write_outputs(report, args.json_out, args.report, args.compare)
    except (BenchError, ReportError) as exc:
        print(f"splatcast bench load: {exc}", file=sys.stderr)
        return 1
    print(md)
    for step in body["steps"]:
        cpu = step["cpu_ms_per_frame_by_stage"]
        print(
            f"{step['sessions']} session(s): {step['effective_fps_min']:.1f} fresh FPS, p95 "
            f"{step['frame_interval_p95_ms'] or float('nan'):.0f} ms, ladder rung {step['ladder_level_max']}, "
            f"video {_num(step['video_kbps_mean'], '.0f')} kb/s at PSNR ≥ {_num(step['video_psnr_db_min'], '.1f')} dB; "
            f"server CPU per frame {_num(cpu['total'], '.1f')} ms = render {_num(cpu['render'], '.1f')} + encode "
            f"{_num(cpu['encode'], '.1f')} + event loop {_num(cpu['event_loop'], '.1f')} (motion "
            f"{_num(cpu['motion_on_the_loop'], '.1f')}) + TTS {_num(cpu.get('tts'), '.1f')} + rest "
            f"{_num(cpu['rest'], '.1f')}; the bench's own clients {_num(step.get('bench_cpu_percent'), '.0f')} % "
            f"of a core ({_num(step.get('bench_cpu_ms_per_frame'), '.1f')} ms per received frame; video decode "
            f"{_num(step.get('bench_video_decode_cpu_percent'), '.0f')} %, audio decode "
            f"{_num(step.get('bench_audio_decode_cpu_percent'), '.0f')} %)"
        )
    checked = body["summary"]["client_video_frames_checked"]
    print(
        "the clients decoded every video frame"
        if checked is None
        else f"the clients timed {checked:.0f} VP8 frames without decoding them (header checked: "
        f"{body['summary']['client_video_frames_malformed']:.0f} malformed; --decode-video to decode)"
    )
    print(f"stopped: {body['stop_reason']}")
    b = body["bottleneck"]
    print(
        f"at {b['at_sessions']} session(s) the dominant stage is {b['dominant_stage']} "
        f"({', '.join(f'{k} {v:.0f} ms/s' for k, v in b['stage_ms_per_s'].items())}; "
        f"server CPU {b['server_cpu_percent_mean'] or float('nan'):.0f} %)"
    )
    if args.url is not None:  # through a balancer this is the capacity of all the replicas behind it
        held = body["summary"]["capacity_sessions"]
        print(
            f"{held:.0f} session(s) held 25 FPS through {args.url}, over {len(body['replicas'])} replica(s):"
        )
        for r in body["replicas"]:
            print(
                f"  {r['replica']}: {r['sessions_at_capacity']} session(s) at capacity "
                f"(it reports capacity {r['capacity']})"
            )
    plots = [f"{Path(args.report) / 'load.md'} and capacity.png in {args.report}"] if args.report else []
    return finish(regressions, args.json_out, *plots)

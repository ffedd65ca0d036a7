"""``splatcast bench soak``: sessions join and leave for M minutes; does the server leak or fail?

Against one server (a local ``splatcast serve`` it starts, or ``--url``):

1. **Priming.** One session connects, speaks one sentence and leaves, so pools
   that start lazily on first use (numba's render threads, asyncio's default
   executor) exist before the baseline. Then, idle, the **baseline** is read
   from ``/metrics``: threads, asyncio tasks, peer connections, RSS.
2. **Churn** for ``--minutes``: at most ``--sessions`` aiortc clients at once
   (default 1), each staying a random 20–60 s (cut at the end of the run). A
   client says scripted sentences, and sometimes interrupts or sets an
   emotion; about one in four leaves abruptly mid-sentence without ``DELETE``
   (its peer connection just closes, as a closed tab's does).
3. Every ~10 s (shorter runs: a tenth of the run) a **sample** of ``/metrics``:
   ``process_resident_memory_bytes``, ``splatcast_threads``,
   ``splatcast_asyncio_tasks``, ``splatcast_peer_connections``,
   ``splatcast_sessions``, ``splatcast_errors_total`` (plus psutil's RSS of a
   local server's pid).
4. **End.** The last clients leave; once the server holds no session and no
   peer connection (or after 60 s), the **end idle** sample is read.

Errors counted: HTTP 5xx answers, failed connects (offer refused, no first
frame in 30 s), sessions that stopped receiving frames for 5 s, and the
server's ERROR log records (``splatcast_errors_total``; for a local server also
the ERROR lines of its captured log, whichever is larger).

RSS growth: the highest RSS in the window just after warm-up vs the highest in
the last window of the run. Warm-up is the first 3 minutes or the first 10 %
of the run, whichever is shorter; the windows are as long as the warm-up (at
least two samples), so a session alive in one sample and gone in the next
weighs the same at both ends. Targets: RSS growth ≤ 5 %, errors = 0, and at the
end, idle, tasks, threads and peer connections no higher than the baseline.
Threads are compared without the workers of asyncio's default executor
(``splatcast_executor_threads``): that pool starts workers on demand, up to
min(32, cores + 4), and keeps them idle for reuse, so its size is a high-water
mark, not a leak (bounded; reported as ``executor_threads_end``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.latency import INTERRUPTED, SENTENCES
from benchmarks.machine import git_info, machine_info
from benchmarks.metrics_scrape import MetricsError, parse_metrics
from benchmarks.report import ReportError, finish, new_report, write_outputs
from benchmarks.target import BenchError, Target
from benchmarks.webrtc_client import Client
from realtime.settings import Settings

logger = logging.getLogger(__name__)

STAY_S = (20.0, 60.0)  # how long one client stays, uniform
ABRUPT_SHARE = 0.25  # clients that vanish mid-sentence without DELETE
INTERRUPT_SHARE = 0.2  # says followed by an interrupt
EMOTION_SHARE = 0.2  # says followed by an emotion change
EMOTIONS = ("happy", "sad", "surprised", "neutral")
STALL_S = 5.0  # a session that received no video frame for this long has stopped: an error
FIRST_FRAME_S = 30.0
CLEANUP_S = 60.0  # at the end, how long the server may take to free the last sessions
MAX_WARMUP_S = 180.0
SAMPLE_S = 10.0
SEED = 8  # the script (stays, sentences, who leaves abruptly) is the same run to run
GAUGES = {  # series name → /metrics sample
    "rss_mb": "process_resident_memory_bytes",
    "threads": "splatcast_threads",
    "executor_threads": "splatcast_executor_threads",
    "tasks": "splatcast_asyncio_tasks",
    "peer_connections": "splatcast_peer_connections",
    "sessions": "splatcast_sessions",
    "errors_total": "splatcast_errors_total",
}
TARGETS = {
    "rss_growth_pct": {"op": "<=", "value": 5.0},
    "errors": {"op": "<=", "value": 0.0},
    "tasks_over_baseline_end": {"op": "<=", "value": 0.0},
    "threads_over_baseline_end": {"op": "<=", "value": 0.0},
    "peer_connections_end": {"op": "<=", "value": 0.0},
    "sessions_end": {"op": "<=", "value": 0.0},
}


@dataclass
class Visit:
    """One client's stay."""

    index: int
    started_s: float  # since the start of the churn
    planned_s: float
    abrupt: bool
    ended_s: float | None = None
    says: int = 0
    interrupts: int = 0
    emotions: int = 0
    frames: int = 0
    error: str | None = None


@dataclass
class Counts:
    http_5xx: int = 0
    connect_failed: int = 0
    stalled: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.messages) < 200:
            self.messages.append(f"{kind}: {message}")


# --- the summary (pure) ---------------------------------------------------------------------------------
def warmup_s(run_s: float) -> float:
    """The first 3 minutes or the first 10 % of the run, whichever is shorter."""
    return min(MAX_WARMUP_S, 0.1 * run_s)


def _max_in(t: list[float], v: Sequence[float | None], start: float, end: float) -> float | None:
    vals = [x for tt, x in zip(t, v, strict=True) if start <= tt <= end and x is not None]
    return max(vals) if vals else None


def _window(t: list[float], start: float, length: float, min_samples: int = 2) -> tuple[float, float]:
    """[start, end] covering ``length`` seconds and at least ``min_samples`` samples from ``start`` on."""
    after = [x for x in t if x >= start]
    end = start + length
    if len(after) >= min_samples:
        end = max(end, after[min_samples - 1])
    return start, end


def summarize(
    series: Mapping[str, Sequence[Any]],
    baseline: Mapping[str, float | None],
    end_idle: Mapping[str, float | None],
    run_s: float,
    counts: Counts,
    sessions_started: int,
    sessions_ended: int,
    log_errors: int | None,
) -> dict[str, float | None]:
    """The headline figures from the sampled time series (``t_s`` seconds since the churn started)."""
    t = [float(x) for x in series["t_s"]]
    warm = warmup_s(run_s)
    a0, a1 = _window(t, warm, warm)
    last = [x for x in t if x <= run_s]
    b1 = last[-1] if last else run_s
    b0 = min(b1 - warm, last[-2] if len(last) >= 2 else b1)
    rss_warm = _max_in(t, series["rss_mb"], a0, a1)
    rss_end = _max_in(t, series["rss_mb"], b0, b1)
    growth = (rss_end - rss_warm) / rss_warm * 100.0 if rss_warm and rss_end is not None else None
    errors_total = series["errors_total"]
    server_errors = None
    if errors_total and errors_total[-1] is not None:
        server_errors = float(
            max(
                0.0,
                (end_idle.get("errors_total") or errors_total[-1]) - (baseline.get("errors_total") or 0.0),
            )
        )
    server_side = max(x for x in (server_errors, log_errors, 0) if x is not None)
    errors = counts.http_5xx + counts.connect_failed + counts.stalled + server_side

    def over(name: str) -> float | None:
        b, e = baseline.get(name), end_idle.get(name)
        return None if b is None or e is None else e - b

    def own_threads(g: Mapping[str, float | None]) -> float | None:
        threads, pool = g.get("threads"), g.get("executor_threads")
        return None if threads is None else threads - (pool or 0.0)

    b_own, e_own = own_threads(baseline), own_threads(end_idle)

    def peak(name: str) -> float | None:
        vals = [x for x in series[name] if x is not None]
        return max(vals) if vals else None

    return {
        "minutes": run_s / 60.0,
        "sessions_started": float(sessions_started),
        "sessions_ended": float(sessions_ended),
        "errors": float(errors),
        "http_5xx": float(counts.http_5xx),
        "connect_failed": float(counts.connect_failed),
        "stalled_sessions": float(counts.stalled),
        "server_errors": None if server_errors is None and log_errors is None else float(server_side),
        "warmup_s": warm,
        "rss_after_warmup_mb": rss_warm,
        "rss_end_mb": rss_end,
        "rss_growth_pct": growth,
        "rss_end_idle_mb": end_idle.get("rss_mb"),
        "rss_baseline_mb": baseline.get("rss_mb"),
        "threads_baseline": baseline.get("threads"),
        "threads_max": peak("threads"),
        "threads_end": end_idle.get("threads"),
        "executor_threads_end": end_idle.get("executor_threads"),
        # the default executor is a pool that grows on demand and keeps idle workers: not counted as a leak
        "threads_over_baseline_end": None if b_own is None or e_own is None else e_own - b_own,
        "tasks_baseline": baseline.get("tasks"),
        "tasks_max": peak("tasks"),
        "tasks_end": end_idle.get("tasks"),
        "tasks_over_baseline_end": over("tasks"),
        "peer_connections_max": peak("peer_connections"),
        "peer_connections_end": end_idle.get("peer_connections"),
        "sessions_end": end_idle.get("sessions"),
    }


# --- the run ---------------------------------------------------------------------------------------------
async def _gauges(probe: Client) -> dict[str, float | None]:
    try:
        status, text = await probe.get("/metrics")
        scrape = parse_metrics(text) if status == 200 else None
    except (MetricsError, OSError, aiohttp.ClientError) as exc:
        logger.warning("bench soak: /metrics unreadable: %s", exc)
        scrape = None
    out: dict[str, float | None] = {}
    for name, metric in GAUGES.items():
        value = scrape.gauges.get(metric) if scrape is not None else None
        out[name] = value / 1e6 if value is not None and name == "rss_mb" else value
    return out


async def _settle(probe: Client, timeout: float) -> dict[str, float | None]:
    """Wait until the server holds no session and no peer connection; then the idle gauges."""
    deadline = time.monotonic() + timeout
    while True:
        g = await _gauges(probe)
        if (g["sessions"] == 0 and g["peer_connections"] == 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(2.5)  # closing tasks finish; the server frees closed sessions 1 s after they close
    return await _gauges(probe)


async def _checked(counts: Counts, visit: Visit, c: Client, path: str, payload: dict[str, Any] | None) -> int:
    try:
        status, body = await c.post(path, payload)
    except (aiohttp.ClientError, OSError) as exc:
        counts.add("http_5xx", f"session {visit.index} {path}: {exc!r}")
        return 599
    if status >= 500:
        counts.add("http_5xx", f"session {visit.index} {path}: {status} {body}")
    return status


async def _visit(target: Target, visit: Visit, end_at: float, rng: random.Random, counts: Counts) -> None:
    """One client: connect, talk until its stay is over (or the run ends), leave (abruptly or not)."""
    c = Client(target.base, api_token=target.api_token)
    leave_at = min(time.monotonic() + visit.planned_s, end_at)
    delete = True
    try:
        try:
            await c.connect()
            await c.wait_video(1, timeout=FIRST_FRAME_S)
        except (RuntimeError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            counts.add("connect_failed", f"session {visit.index}: {exc}")
            visit.error = f"connect: {exc}"
            return
        script = [*SENTENCES, INTERRUPTED]
        while time.monotonic() < leave_at:
            text = script[rng.randrange(len(script))]
            if await _checked(counts, visit, c, "say", {"text": text}) == 202:
                visit.says += 1
            roll = rng.random()
            if visit.abrupt and time.monotonic() + 6.0 > leave_at:
                await asyncio.sleep(0.8)  # mid-sentence
                delete = False
                break
            pause = rng.uniform(1.0, 6.0)
            if not await _watch(c, visit, min(pause, max(0.0, leave_at - time.monotonic())), counts):
                return
            if roll < INTERRUPT_SHARE:
                if await _checked(counts, visit, c, "interrupt", None) == 200:
                    visit.interrupts += 1
            elif roll < INTERRUPT_SHARE + EMOTION_SHARE:
                payload = {"name": rng.choice(EMOTIONS), "intensity": round(rng.uniform(0.3, 1.0), 2)}
                if await _checked(counts, visit, c, "emotion", payload) == 200:
                    visit.emotions += 1
            if not await _watch(
                c, visit, min(rng.uniform(1.0, 4.0), max(0.0, leave_at - time.monotonic())), counts
            ):
                return
    finally:
        visit.frames = len(c.rx.video_t)
        with contextlib.suppress(Exception):
            await c.close(delete=delete)
        visit.abrupt = visit.abrupt and not delete
        visit.ended_s = time.monotonic()


async def _watch(c: Client, visit: Visit, seconds: float, counts: Counts) -> bool:
    """Sleep ``seconds`` while checking that frames keep arriving; False (and an error) when they stopped."""
    end = time.monotonic() + seconds
    while True:
        now = time.monotonic()
        last = c.rx.video_t[-1] if c.rx.video_t else c.connected_at or now
        if now - last > STALL_S:
            counts.add("stalled", f"session {visit.index}: no video frame for {now - last:.1f} s")
            visit.error = "stalled"
            return False
        if now >= end:
            return True
        await asyncio.sleep(min(0.5, end - now))


def _log_errors(target: Target) -> int | None:
    if target.server is None:
        return None
    # logged errors, and exceptions that escaped a thread (printed by threading.excepthook, not logged)
    marks = (" ERROR ", " CRITICAL ")
    return sum(
        1
        for line in list(target.server.log)
        if any(m in line for m in marks) or line.startswith("Exception in thread")
    )


async def run_soak(
    target: Target,
    minutes: float,
    max_sessions: int = 1,
    stay_s: tuple[float, float] = STAY_S,
    seed: int = SEED,
    progress: bool = True,
) -> dict[str, Any]:
    from tqdm import tqdm

    rng = random.Random(seed)
    run_s = minutes * 60.0
    sample_s = min(SAMPLE_S, max(1.0, run_s / 10.0))
    counts = Counts()
    probe = Client(target.base, api_token=target.api_token)
    visits: list[Visit] = []
    series: dict[str, list[Any]] = {"t_s": [], "rss_mb_psutil": [], **{k: [] for k in GAUGES}}
    try:
        # priming: lazily started pools exist before the baseline
        prime = Visit(-1, 0.0, 4.0, abrupt=False)
        await _visit(target, prime, time.monotonic() + 60.0, random.Random(seed), counts)
        baseline = await _settle(probe, CLEANUP_S)
        t0 = time.monotonic()
        end_at = t0 + run_s
        live: set[asyncio.Task[None]] = set()
        bar = tqdm(
            total=round(minutes, 2), unit="min", desc="bench soak", disable=not progress, file=sys.stderr
        )
        next_sample = t0
        try:
            while time.monotonic() < end_at:
                now = time.monotonic()
                while len(live) < max_sessions and now < end_at - 2.0:
                    visit = Visit(
                        len(visits), now - t0, rng.uniform(*stay_s), abrupt=rng.random() < ABRUPT_SHARE
                    )
                    visits.append(visit)
                    task = asyncio.create_task(
                        _visit(target, visit, end_at, random.Random(rng.random()), counts)
                    )
                    live.add(task)
                    task.add_done_callback(live.discard)
                if now >= next_sample:
                    g = await _gauges(probe)
                    series["t_s"].append(time.monotonic() - t0)
                    for k in GAUGES:
                        series[k].append(g[k])
                    s = target.sampler.samples if target.sampler is not None else None
                    series["rss_mb_psutil"].append(s.rss_mb[-1] if s is not None and s.rss_mb else None)
                    next_sample += sample_s
                    bar.n = round(min(minutes, (time.monotonic() - t0) / 60.0), 2)
                    bar.set_postfix_str(
                        f"{len(visits)} sessions, RSS {g['rss_mb'] or 0:.0f} MB, tasks {g['tasks'] or 0:.0f}, "
                        f"errors {counts.http_5xx + counts.connect_failed + counts.stalled}"
                    )
                    bar.refresh()
                await asyncio.sleep(0.25)
            if live:
                await asyncio.wait(set(live), timeout=FIRST_FRAME_S + 10.0)
        finally:
            bar.n = round(minutes, 2)
            bar.close()
            for task in list(live):
                task.cancel()
            await asyncio.gather(*live, return_exceptions=True)
        end_idle = await _settle(probe, CLEANUP_S)
    finally:
        await probe.close()
    log_errors = _log_errors(target)
    ended = sum(1 for v in visits if v.ended_s is not None)
    summary = summarize(series, baseline, end_idle, run_s, counts, len(visits), ended, log_errors)
    return {
        "summary": summary,
        "series": series,
        "sessions": [asdict(v) for v in visits],
        "baseline": baseline,
        "end_idle": end_idle,
        "errors": counts.messages,
        "sample_s": sample_s,
    }


def bench_soak_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.minutes <= 0:
        print("splatcast bench soak: --minutes must be > 0", file=sys.stderr)
        return 2
    sessions = 1 if args.sessions is None else args.sessions
    if sessions < 1:
        print("splatcast bench soak: --sessions must be >= 1", file=sys.stderr)
        return 2
    command = "splatcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = {**machine_info(), "git": git_info()}
    try:
        with Target(settings, args.url) as target:
            body = asyncio.run(run_soak(target, args.minutes, sessions))
            config = {
                **target.info,
                "minutes": args.minutes,
                "max_sessions": sessions,
                "stay_s": list(STAY_S),
                "abrupt_share": ABRUPT_SHARE,
                "sample_s": body.pop("sample_s"),
                "seed": SEED,
                "warmup": "the first 3 min or 10 % of the run, whichever is shorter",
            }
        report = new_report("soak", command, config, machine)
        report.update(body)
        report["targets"] = TARGETS
        md, regressions = write_outputs(report, args.json_out, args.report, args.compare)
    except (BenchError, ReportError) as exc:
        print(f"splatcast bench soak: {exc}", file=sys.stderr)
        return 1
    print(md)
    for line in body["errors"][:20]:
        print(f"error: {line}")
    plots = [f"{Path(args.report) / 'soak.md'} and soak.png in {args.report}"] if args.report else []
    return finish(regressions, args.json_out, *plots)

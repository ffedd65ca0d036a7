"""``splatcast bench soak``: the summary maths on a synthetic series, and one short real run.

The real run (0.25 min, one session, synthetic avatar at 160 px) checks the
runner end to end: it samples the server's process gauges, ends every session
it starts, and finds the server back at its idle baseline. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import validate
from benchmarks.soak import Counts, summarize, warmup_s
from engines.splat.synthetic import write_synthetic_avatar


def test_warmup_is_three_minutes_or_a_tenth_of_the_run() -> None:
    assert warmup_s(30 * 60) == 180.0
    assert warmup_s(10 * 60) == 60.0
    assert warmup_s(18.0) == pytest.approx(1.8)


def _series(run_s: float = 1200.0) -> dict[str, list[Any]]:
    t = [float(x) for x in range(0, int(run_s) + 1, 10)]
    rss = []
    for x in t:
        if x < 120:
            rss.append(400.0)  # warm-up: lower, and ignored
        elif x == 130:
            rss.append(600.0)  # the peak of the window after warm-up [120, 240]
        elif x >= 1080:
            rss.append(630.0 if x == 1150 else 580.0)  # the last window [1080, 1200]: peak 630
        else:
            rss.append(550.0)
    return {
        "t_s": t,
        "rss_mb": rss,
        "rss_mb_psutil": [None] * len(t),
        "threads": [5.0 if x < 500 else 7.0 for x in t],
        "executor_threads": [1.0 if x < 500 else 2.0 for x in t],
        "tasks": [4.0 + (x % 3) * 20 for x in t],  # 4, 24, 44
        "peer_connections": [1.0] * len(t),
        "sessions": [1.0] * len(t),
        "errors_total": [2.0] * (len(t) - 1) + [4.0],
    }


def test_summary_figures_from_a_synthetic_series() -> None:
    series = _series()
    baseline: dict[str, float | None] = {
        "rss_mb": 390.0,
        "threads": 5.0,
        "executor_threads": 1.0,
        "tasks": 4.0,
        "errors_total": 2.0,
    }
    end_idle: dict[str, float | None] = {
        "rss_mb": 560.0,
        "threads": 8.0,
        "executor_threads": 3.0,
        "tasks": 6.0,
        "sessions": 0.0,
    }
    end_idle["peer_connections"] = 0.0
    end_idle["errors_total"] = 5.0
    counts = Counts(http_5xx=1, stalled=1)
    s = summarize(series, baseline, end_idle, 1200.0, counts, 30, 29, log_errors=1)
    assert s["warmup_s"] == 120.0
    assert s["rss_after_warmup_mb"] == 600.0
    assert s["rss_end_mb"] == 630.0
    assert s["rss_growth_pct"] == pytest.approx(5.0)
    # server-side errors: errors_total end idle minus baseline (3) beats the 1 log line; plus 5xx and stall
    assert s["server_errors"] == 3.0
    assert s["errors"] == 5.0
    # threads 5 → 8, of which executor workers 1 → 3: one thread over the baseline outside the pool
    assert s["threads_max"] == 7.0 and s["threads_over_baseline_end"] == 1.0
    assert s["executor_threads_end"] == 3.0
    assert s["tasks_max"] == 44.0 and s["tasks_end"] == 6.0 and s["tasks_over_baseline_end"] == 2.0
    assert s["peer_connections_max"] == 1.0 and s["peer_connections_end"] == 0.0
    assert s["sessions_started"] == 30.0 and s["sessions_ended"] == 29.0 and s["sessions_end"] == 0.0


def test_summary_of_a_short_run_uses_at_least_two_samples_per_window() -> None:
    # 18 s run sampled every 3 s: the 1.8 s warm-up window still spans two samples (3 s and 6 s)
    t = [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0]
    rss = [100.0, 110.0, 120.0, 115.0, 118.0, 121.0, 119.0]
    series: dict[str, list[Any]] = {
        "t_s": t,
        "rss_mb": rss,
        "threads": [5.0] * 7,
        "executor_threads": [1.0] * 7,
        "tasks": [4.0] * 7,
    }
    series |= {"peer_connections": [1.0] * 7, "sessions": [1.0] * 7, "errors_total": [None] * 7}
    s = summarize(series, {}, {}, 18.0, Counts(), 1, 1, log_errors=None)
    assert s["rss_after_warmup_mb"] == 120.0  # max of the samples at 3 s and 6 s
    assert s["rss_end_mb"] == 121.0  # max of the samples at 15 s and 18 s
    assert s["rss_growth_pct"] == pytest.approx(100.0 / 120.0)
    assert s["errors"] == 0.0 and s["server_errors"] is None
    assert s["tasks_over_baseline_end"] is None  # no baseline read: unknown, not 0


@pytest.fixture(scope="module")
def soak_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("soak")
    avatar = tmp / "synthetic.safetensors"
    write_synthetic_avatar(avatar)
    out = tmp / "soak.json"
    cmd = [sys.executable, "-m", "realtime.cli", "bench", "soak", "--minutes", "0.25", "--sessions", "1"]
    cmd += ["--size", "160", "--avatar", str(avatar), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    data: dict = json.loads(Path(out).read_text())
    return data


def test_short_real_soak_samples_the_server_and_ends_idle(soak_run: dict) -> None:
    data = soak_run
    validate(data)
    assert data["kind"] == "soak" and data["config"]["max_sessions"] == 1
    s, series = data["summary"], data["series"]
    n = len(series["t_s"])
    assert n >= 4 and all(len(v) == n for v in series.values())
    assert all(v is not None and v > 50 for v in series["rss_mb"])  # MB read from /metrics
    assert all(v is not None and v > 50 for v in series["rss_mb_psutil"])  # and psutil on the local pid
    assert max(series["sessions"]) == 1 and max(series["peer_connections"]) == 1
    assert s["sessions_started"] >= 1 and s["sessions_ended"] == s["sessions_started"]
    assert data["sessions"][0]["says"] >= 1 and data["sessions"][0]["frames"] > 25
    assert s["errors"] == 0, data["errors"]
    # idle at the end: back to the baseline read after the priming session
    assert s["sessions_end"] == 0 and s["peer_connections_end"] == 0
    assert s["tasks_max"] > s["tasks_baseline"]  # a session's tasks were seen while it ran
    assert s["tasks_over_baseline_end"] == 0 and s["threads_over_baseline_end"] == 0
    assert s["rss_growth_pct"] is not None

"""One short real `splatcast bench latency` run: the JSON has every field, with sane types and values.

Timings are not asserted (they belong to the benchmark's own JSON); what is
asserted is that the runner measured each thing it claims to measure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import validate
from engines.splat.synthetic import write_synthetic_avatar

SESSION_FIELDS = {
    "connect_to_first_frame_ms": float,
    "say_to_first_audio_ms": list,
    "say_to_mouth_open_ms": list,
    "tts_to_first_frame_ms": list,
    "interrupt_to_silence_ms": list,
    "received_fps": float,
    "frame_interval_ms": dict,
    "repeated_frames": int,
    "dropped_frames": int,
    "audio_gaps_rx": int,
    "av_offset_ms": dict,
}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    avatar = tmp / "synthetic.safetensors"
    write_synthetic_avatar(avatar)
    out, report_dir = tmp / "latency.json", tmp / "report"
    cmd = [sys.executable, "-m", "realtime.cli", "bench", "latency", "--sessions", "1", "--duration", "10"]
    cmd += ["--size", "160", "--avatar", str(avatar), "--json", str(out), "--report", str(report_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return json.loads(out.read_text()), report_dir


def test_latency_json_follows_the_schema_and_has_every_figure(result: tuple[dict, Path]) -> None:
    data, _ = result
    validate(data)
    assert data["kind"] == "latency"
    assert data["config"]["size"] == 160 and data["config"]["sessions"] == 1
    assert data["config"]["mouth_box"] is not None
    (session,) = data["sessions"]
    for name, kind in SESSION_FIELDS.items():
        value = session[name]
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)), (name, value)
    says = session["says"]
    assert len(says) >= 2 and any(s["interrupted"] for s in says)
    assert len(session["say_to_first_audio_ms"]) == len(says)
    # each say was heard, and the first ones opened the mouth in the pixels
    heard = [v for v in session["say_to_first_audio_ms"] if v is not None]
    assert len(heard) == len(says) and all(v > 0 for v in heard)
    assert any(v is not None and v > 0 for v in session["say_to_mouth_open_ms"])
    assert session["tts_to_first_frame_ms"], "the server published no lip_latency event"
    assert 10.0 < session["received_fps"] < 40.0
    iv = session["frame_interval_ms"]
    assert 0 < iv["p50"] <= iv["p95"] <= iv["p99"] <= iv["max"]
    assert session["interrupt_to_silence_ms"] and session["interrupt_to_silence_ms"][0] >= 0
    av = session["av_offset_ms"]
    assert av["raw_ms"] is not None and -300 <= av["raw_ms"] <= 300
    assert av["corrected_ms"] == pytest.approx(av["raw_ms"] - 33.0)


def test_server_figures_and_summary(result: tuple[dict, Path]) -> None:
    data, _ = result
    server = data["server"]
    assert server["cpu_percent_mean"] is not None and server["cpu_percent_mean"] > 0
    assert server["rss_mb_max"] > 50
    for stage in ("render", "encode", "motion", "tts_to_frame"):
        assert server["stages"][stage]["count"] > 0, stage
    s = data["summary"]
    for name in ("received_fps_min", "frame_interval_p95_ms", "say_to_first_audio_ms_p50", "av_offset_ms"):
        assert isinstance(s[name], float), name
    assert data["git"]["commit"] is None or len(data["git"]["commit"]) == 40


def test_report_dir_has_table_and_plots(result: tuple[dict, Path]) -> None:
    _, report_dir = result
    md = (report_dir / "latency.md").read_text()
    assert "| received_fps_min |" in md
    for png in ("latency_cdf.png", "frame_intervals.png", "fps_over_time.png", "av_offset.png"):
        head = (report_dir / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n", png

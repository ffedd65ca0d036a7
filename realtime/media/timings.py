"""Per-stage timing histograms (lip sync, motion, render, encode, ...), rendered as Prometheus text.

Small and dependency-free: every stage (lip sync, motion, render, encode)
records its duration in milliseconds into a fixed-bucket histogram. Thread-safe:
the render worker records from its own thread.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable

DEFAULT_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 250, 500, 1000)


class Histogram:
    """Cumulative-bucket histogram of values in milliseconds, with quantile estimates."""

    def __init__(self, name: str, help_text: str, buckets: Iterable[float] = DEFAULT_BUCKETS_MS) -> None:
        self.name = name
        self.help = help_text
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # last: +Inf
        self._sum = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, value_ms: float) -> None:
        if not math.isfinite(value_ms):
            return
        i = bisect.bisect_left(self.buckets, value_ms)
        with self._lock:
            self._counts[i] += 1
            self._sum += value_ms
            self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        out = {"count": float(n), "mean_ms": total / n if n else 0.0}
        for q in (0.5, 0.95, 0.99):
            out[f"p{int(q * 100)}_ms"] = self._quantile(counts, n, q)
        return out

    def _quantile(self, counts: list[int], n: int, q: float) -> float:
        """Upper bound of the bucket holding quantile q (conservative)."""
        if n == 0:
            return 0.0
        target = q * n
        running = 0
        for i, c in enumerate(counts):
            running += c
            if running >= target:
                return self.buckets[i] if i < len(self.buckets) else math.inf
        return math.inf

    def prometheus(self, labels: str = "") -> list[str]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        lines = []
        running = 0
        for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
            running += c
            le = "+Inf" if math.isinf(bound) else f"{bound:g}"
            sep = "," if labels else ""
            lines.append(f'{self.name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{self.name}_sum{suffix} {total:.6f}")
        lines.append(f"{self.name}_count{suffix} {n}")
        return lines


class StageTimings:
    """One histogram per pipeline stage, rendered together as one Prometheus metric family."""

    # render: wall time of a frame's render (+ conversion) on a render worker; render_cpu: that worker
    # thread's CPU time for it (all of it when a frame renders on one thread, the default on a CPU).
    # encode: wall time the WebRTC sender spends between two frames (hand-offs, encoding, sending, waiting
    # for the event loop); encode_cpu: the encoder's own CPU time per frame.
    # tts_to_frame: once per reply, first TTS audio in AvatarStream → its first frame released to the tracks
    # tts_cpu: per synthesised speech chunk, the TTS thread's CPU time (Piper + the chunk's prosody)
    STAGES = (
        "lipsync",
        "motion",
        "render",
        "render_cpu",
        "encode",
        "encode_cpu",
        "frame_lateness",
        "tts_to_frame",
        "tts_cpu",
    )

    def __init__(self, metric: str = "splatcast_stage_ms") -> None:
        self.metric = metric
        self.stages = {s: Histogram(metric, "per-frame stage duration in ms") for s in self.STAGES}

    def observe(self, stage: str, value_ms: float) -> None:
        self.stages[stage].observe(value_ms)

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {name: h.snapshot() for name, h in self.stages.items()}

    def prometheus(self) -> list[str]:
        lines = [
            f"# HELP {self.metric} per-frame duration of each pipeline stage (ms)",
            f"# TYPE {self.metric} histogram",
        ]
        for name, h in self.stages.items():
            lines += h.prometheus(labels=f'stage="{name}"')
        return lines

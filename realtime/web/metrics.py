"""Prometheus gauges for ``/metrics``: one-line gauges, the process (RSS, threads, tasks), logged errors."""

from __future__ import annotations

import logging
import os
import threading


def gauge(name: str, help_text: str, value: float, kind: str = "gauge") -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]


class ErrorCounter(logging.Handler):
    """Counts ERROR (and worse) log records: every failure the server logs is one ``splatcast_errors_total``.

    Attached to the root logger by the server for its lifetime (render failures,
    a frame clock that stopped, a conversation pipeline error, an HTTP 500 all
    log at ERROR), so the counter needs no call at each failure site.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def resident_memory_bytes() -> int:
    """This process's resident set size: /proc/self/statm on Linux, else the peak RSS from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return int(peak if sys.platform == "darwin" else peak * 1024)


def executor_threads() -> int:
    """Threads of asyncio's default executor (``run_in_executor(None, ...)``), named ``asyncio_<n>``."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("asyncio_"))


def process_gauges(tasks: int, peer_connections: int, errors: int | None) -> list[str]:
    """Prometheus lines for the process: RSS, threads, asyncio tasks, live peer connections, errors."""
    lines = gauge("process_resident_memory_bytes", "resident memory size in bytes", resident_memory_bytes())
    lines += gauge("splatcast_threads", "live Python threads", threading.active_count())
    lines += gauge(
        "splatcast_executor_threads",
        "of those, workers of asyncio's default executor (a pool: grows on demand to min(32, cores + 4), "
        "then idles)",
        executor_threads(),
    )
    lines += gauge("splatcast_asyncio_tasks", "asyncio tasks on the server loop", tasks)
    lines += gauge(
        "splatcast_peer_connections", "RTCPeerConnections created and not yet closed", peer_connections
    )
    if errors is not None:
        lines += gauge("splatcast_errors_total", "ERROR log records since start", errors, "counter")
    return lines

"""A ``splatcast serve`` (or ``splatcast bot``) subprocess on a free loopback port, for benchmarks and tests.

It is ready when ``GET /healthz`` answers 200 (polled; nothing parses its
output). Its output is kept in :attr:`ServerProcess.log`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A loopback port that nothing listens on now and that this process has not handed out before: the
    kernel may hand a port just released here out again, and a server given an earlier one may not have
    bound it yet (two replicas of a test cluster once got the same port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port


class ServerProcess:
    """``splatcast serve`` (or ``splatcast bot``) in a subprocess on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, command: str = "serve") -> None:
        """``command``: ``serve`` or ``bot`` (both answer ``GET /healthz`` once ready)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "realtime.cli", command, "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.log: list[str] = []
        # keep reading its output from the start, or a chatty server blocks on a full pipe
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Return once ``GET /healthz`` answers 200; raise when the process exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._drain.join(timeout=5)
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n" + "".join(self.log))
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass  # not listening yet (or busy loading): ask again
            time.sleep(0.2)
        raise TimeoutError("server did not start:\n" + "".join(self.log))

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if len(self.log) > 4000:
                del self.log[:2000]

    def stop(self) -> int:
        """SIGTERM, then its exit status (-9: killed after 30 s); :attr:`log` then holds all it printed."""
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = -9
        self._drain.join(timeout=5)
        return code

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/healthz", timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

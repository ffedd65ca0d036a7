"""A real HAProxy (Debian's ``haproxy``) in front of local replicas, for benchmarks and tests.

:class:`HAProxy` writes the configuration ``splatcast deploy haproxy`` would
(:mod:`realtime.web.haproxy_config`) for replicas on this machine, checks it
with ``haproxy -c``, runs ``haproxy -db`` in the foreground on a free loopback
port, and reads the servers' state from its runtime API (a unix socket in its
directory): status (UP, DOWN, DRAIN, MAINT, NOLB), current weight, agent
status, requests sent. ``scripts/install-system-deps.sh`` installs haproxy;
:func:`haproxy_binary` is None without it.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchmarks.server_process import free_port
from realtime.web.haproxy_config import HAProxyConfig, Replica

T = TypeVar("T")


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


@dataclass(frozen=True)
class ServerState:
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, NOLB, "UP 1/2" while rising, ...
    weight: int
    agent_status: str  # e.g. L7OK, L4CON (connection refused)
    check_status: str
    total: int  # requests and connections HAProxy has sent to it (health and agent checks not counted)


class HAProxy:
    """``haproxy -db -f <generated cfg>``; ``url`` is its frontend, ``state()`` its servers' state."""

    def __init__(
        self,
        workdir: Path,
        replicas: Sequence[Replica],
        check_inter_s: float = 0.5,
        agent_inter_s: float = 0.5,
        session_max_s: int = 3600,
    ) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket_path = workdir / "haproxy.sock"
        self.config_path = workdir / "haproxy.cfg"
        self.config = HAProxyConfig(
            replicas=tuple(replicas),
            bind=(f"127.0.0.1:{self.port}",),
            stats_socket=str(self.socket_path),
            check_inter_s=check_inter_s,
            agent_inter_s=agent_inter_s,
            session_max_s=session_max_s,
        )
        self.config_path.write_text(self.config.render())
        check = subprocess.run([binary, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(
                f"haproxy -c refused the generated configuration:\n{check.stdout}{check.stderr}"
            )
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            wait_until(self._listening, 20.0, "haproxy did not start listening")
        except BaseException:
            self.stop()
            raise

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if len(self.log) > 5000:
                del self.log[:2500]

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("haproxy exited:\n" + "".join(self.log[-30:]))
        if not self.socket_path.exists():
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def command(self, line: str) -> str:
        """One runtime API command (``show stat``, ``show servers state``, ``disable agent ...``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def state(self) -> dict[str, ServerState]:
        """The backend's servers by name (replica1, replica2, ...)."""
        text = self.command("show stat").lstrip("# ")
        out = {}
        for row in csv.DictReader(text.splitlines()):
            if row.get("pxname") != "replicas" or row.get("svname") in ("FRONTEND", "BACKEND"):
                continue
            out[row["svname"]] = ServerState(
                name=row["svname"],
                status=row["status"],
                weight=int(row["weight"] or 0),
                agent_status=row.get("agent_status", ""),
                check_status=row.get("check_status", ""),
                total=int(row.get("stot") or 0),
            )
        return out

    def wait_state(
        self, predicate: Callable[[dict[str, ServerState]], bool], timeout: float, what: str
    ) -> dict[str, ServerState]:
        last: dict[str, ServerState] = {}

        def check() -> bool:
            nonlocal last
            last = self.state()
            return predicate(last)

        try:
            wait_until(check, timeout, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; servers: {last}") from None
        return last

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(check: Callable[[], bool], timeout: float, what: str, period: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (after {timeout:g} s)")
        time.sleep(period)


@contextlib.contextmanager
def running_haproxy(workdir: Path, replicas: Sequence[Replica], **kwargs: float) -> Iterator[HAProxy]:
    proxy = HAProxy(workdir, replicas, **kwargs)  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.stop()

"""The server a benchmark measures: a local ``splatcast serve`` it starts, or a URL; plus its CPU/RSS.

A local server gets the benchmark's settings (avatar, size, fps, backend), a
``--capacity`` high enough that admission control never hides the real limit
(``bench load`` finds that one), and a relaxed per-IP offer rate (every client
connects from 127.0.0.1). Its CPU and memory are sampled with psutil; a remote
server reports only what its ``/metrics`` exposes.

With ``replicas`` > 1 it starts that many local servers behind a local HAProxy
(the configuration ``splatcast deploy haproxy`` writes; Debian's haproxy must
be installed) and the benchmark talks to HAProxy. The replicas keep their own
admission control (measured capacity, or ``--capacity``) so that their agent
checks steer sessions as in a deployment; CPU and memory are their sum.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.server_process import ServerProcess, free_port
from engines import assets
from engines.splat.synthetic import write_synthetic_avatar
from realtime.settings import Settings

if TYPE_CHECKING:
    from benchmarks.haproxy_process import HAProxy

logger = logging.getLogger(__name__)

LOCAL_CAPACITY = 64  # admission control off for all practical purposes: load finds the real capacity


def render_pool_args(settings: Settings) -> list[str]:
    """The render pool flags the benchmark was given, for the server it starts."""
    args = []
    if settings.numba_threads:
        args += ["--numba-threads", str(settings.numba_threads)]
    if settings.render_workers:
        args += ["--render-workers", str(settings.render_workers)]
    return args


class BenchError(RuntimeError):
    """The benchmark could not run (server did not start, no frames arrived, ...)."""


def avatar_path(settings: Settings, scratch: Path) -> tuple[Path, bool]:
    """(avatar file, synthetic?) — the settings' avatar, else the bundled one, else a synthetic stand-in."""
    if settings.avatar is not None:
        return Path(settings.avatar), False
    try:
        return assets.default_avatar(), False
    except assets.AssetMissingError:
        logger.warning(
            "bench: the default avatar is not shipped yet; measuring a synthetic avatar instead "
            "(figures are not comparable with the default avatar's)"
        )
        path = scratch / "synthetic-avatar.safetensors"
        write_synthetic_avatar(path)
        return path, True


def mouth_box_pixels(path: Path, size: int) -> tuple[int, int, int, int] | None:
    """The avatar's mouth box (x0, y0, x1, y1) in pixels of a ``size``×``size`` video, if it has one."""
    from engines.splat.avatar import load_avatar

    avatar = load_avatar(path)
    box = avatar.metadata.get("mouth_box")
    if not box:
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = size / avatar.camera.width, size / avatar.camera.height
    return int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))


@dataclass
class ResourceSamples:
    t: list[float] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)  # 100 = one core
    rss_mb: list[float] = field(default_factory=list)
    loop_cpu_s: list[float] = field(default_factory=list)  # main threads' CPU time so far (the event loops)

    def window(self, start: float, end: float) -> dict[str, float | None]:
        idx = [i for i, t in enumerate(self.t) if start <= t <= end]
        cpu = [self.cpu_percent[i] for i in idx]
        rss = [self.rss_mb[i] for i in idx]
        loop = [self.loop_cpu_s[i] for i in idx] if len(self.loop_cpu_s) == len(self.t) else []
        span = self.t[idx[-1]] - self.t[idx[0]] if len(idx) > 1 else 0.0
        return {
            "cpu_percent_mean": float(np.mean(cpu)) if cpu else None,
            "cpu_percent_max": float(np.max(cpu)) if cpu else None,
            "rss_mb_max": float(np.max(rss)) if rss else None,
            # the event loop's share: its thread's CPU time over the window, in % of one core
            "loop_cpu_percent_mean": 100.0 * (loop[-1] - loop[0]) / span
            if len(loop) > 1 and span > 0
            else None,
        }


def _main_thread_cpu_s(proc: Any) -> float:
    """CPU seconds of a process's main thread (its thread id is the process id): the server's event loop."""
    for thread in proc.threads():
        if thread.id == proc.pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


class ResourceSampler:
    """Samples processes' CPU % and RSS (summed) every ``period`` seconds on a daemon thread."""

    def __init__(self, *pids: int, period: float = 0.5) -> None:
        import psutil

        self.procs = [psutil.Process(pid) for pid in pids]
        self.period = period
        self.samples = ResourceSamples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-psutil", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psutil

        try:
            for proc in self.procs:
                proc.cpu_percent(None)
            while not self._stop.wait(self.period):
                cpu = sum(proc.cpu_percent(None) for proc in self.procs)
                rss = sum(proc.memory_info().rss for proc in self.procs) / 1e6
                loop = sum(_main_thread_cpu_s(proc) for proc in self.procs)
                self.samples.t.append(time.monotonic())
                self.samples.cpu_percent.append(cpu)
                self.samples.rss_mb.append(rss)
                self.samples.loop_cpu_s.append(loop)
        except psutil.Error:
            return  # the server exited


class Target:
    """Context manager: ``base`` URL, ``mouth_box``, ``sampler`` (None for a remote server), ``info``."""

    def __init__(self, settings: Settings, url: str | None, replicas: int = 1) -> None:
        if replicas < 1 or (replicas > 1 and url is not None):
            raise BenchError("--replicas N starts N local replicas: give it without --url (N >= 1)")
        self.settings = settings
        self.url = url
        self.replicas = replicas
        self._tmp = tempfile.TemporaryDirectory(prefix="splatcast-bench-")
        self.server: ServerProcess | None = None
        self.servers: list[ServerProcess] = []  # with replicas > 1
        self.balancer: HAProxy | None = None
        self.sampler: ResourceSampler | None = None
        self.base = ""
        self.mouth_box: tuple[int, int, int, int] | None = None
        self.info: dict[str, Any] = {}
        self.api_token = settings.token if url is not None else None  # a remote server's API token

    def __enter__(self) -> Target:
        s = self.settings
        path: Path | None
        synthetic = False
        try:
            if self.url is None:
                path, synthetic = avatar_path(s, Path(self._tmp.name))
            else:  # remote: the mouth box comes from --avatar (the same file the server uses) if given
                path = Path(s.avatar) if s.avatar else None
                if path is None:
                    try:
                        path = assets.default_avatar()
                    except assets.AssetMissingError:
                        path = None
            self.mouth_box = mouth_box_pixels(path, s.size) if path is not None else None
            self.info = {
                "url": self.url or "local",
                "replicas": self.replicas if self.url is None else None,
                "avatar": path.name if path is not None else None,
                "synthetic_avatar": synthetic,
                "size": s.size,
                "fps": s.fps,
                "render_backend": s.render_backend,
                "expressiveness": s.expressiveness,
                "mouth_box": list(self.mouth_box) if self.mouth_box else None,
            }
            if self.url is not None:
                self.base = self.url.rstrip("/")
                return self
            assert path is not None
            if self.replicas > 1:
                self._start_replicas(path)
                return self
            args = ["--avatar", str(path), "--size", str(s.size), "--fps", str(s.fps)]
            args += ["--render-backend", s.render_backend, "--capacity", str(LOCAL_CAPACITY)]
            args += ["--expressiveness", str(s.expressiveness)]
            args += render_pool_args(s)
            env = dict(os.environ, SPLATCAST_OFFER_RATE_PER_MINUTE="10000", SPLATCAST_LOG_LEVEL="WARNING")
            env.pop("SPLATCAST_TOKEN", None)
            self.server = ServerProcess(*args, env=env)
            try:
                self.server.wait_ready()
            except (RuntimeError, TimeoutError) as exc:
                raise BenchError(f"the local server did not start: {exc}") from exc
            self.base = self.server.base
            self.sampler = ResourceSampler(self.server.pid)
            self.sampler.start()
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _start_replicas(self, avatar: Path) -> None:
        """N servers with agent checks, behind HAProxy, all on loopback."""
        from benchmarks.haproxy_process import HAProxy, haproxy_binary
        from realtime.web.haproxy_config import Replica

        if haproxy_binary() is None:
            raise BenchError("--replicas needs HAProxy (apt-get install haproxy)")
        s = self.settings
        env = dict(os.environ, SPLATCAST_OFFER_RATE_PER_MINUTE="10000", SPLATCAST_LOG_LEVEL="WARNING")
        env.pop("SPLATCAST_TOKEN", None)
        members = []
        for _ in range(self.replicas):
            agent = free_port()
            args = ["--avatar", str(avatar), "--size", str(s.size), "--fps", str(s.fps)]
            args += ["--render-backend", s.render_backend, "--agent-port", str(agent)]
            args += ["--trusted-proxies", "127.0.0.1/32"]
            if s.capacity:
                args += ["--capacity", str(s.capacity)]
            args += render_pool_args(s)
            server = ServerProcess(*args, env=env)
            self.servers.append(server)
            members.append(Replica("127.0.0.1", server.port, agent))
        for server in self.servers:  # started together: they load side by side
            try:
                server.wait_ready()
            except (RuntimeError, TimeoutError) as exc:
                raise BenchError(f"a local replica did not start: {exc}") from exc
        try:
            self.balancer = HAProxy(Path(self._tmp.name) / "haproxy", members)
        except (RuntimeError, TimeoutError) as exc:
            raise BenchError(f"HAProxy did not start: {exc}") from exc
        self.base = self.balancer.url
        self.info["balancer"] = "haproxy"
        self.sampler = ResourceSampler(*(server.pid for server in self.servers))
        self.sampler.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.balancer is not None:
            self.balancer.stop()
        for server in self.servers:
            code = server.stop()
            if code not in (0, -15):
                logger.warning("bench: a local replica exited with %s:\n%s", code, "".join(server.log[-20:]))
        if self.server is not None:
            code = self.server.stop()
            if code not in (0, -15):
                logger.warning(
                    "bench: the local server exited with %s:\n%s", code, "".join(self.server.log[-20:])
                )
        self._tmp.cleanup()

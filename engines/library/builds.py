"""The build queue: avatar builds one at a time, each in its own low-priority process.

A live call must keep 25 FPS while an avatar is built on the same machine, so a build:

* runs in its own process (:mod:`engines.library.build_worker`), never in the server's;
* runs at the lowest CPU priority the OS has (``SCHED_IDLE`` on Linux, else ``nice 19``):
  it gets only CPU time the sessions leave over;
* uses one thread (numba, BLAS and onnxruntime pinned to 1), so it can never
  take more than one core even when the machine is otherwise idle;
* waits its turn: one build at a time, the rest queued with their position;
* **pauses while live calls struggle**: ``pressure()`` (the server: a session fell below 24 fresh FPS)
  stops the build's process group (``SIGSTOP``) until the calls have been healthy for
  :data:`RESUME_AFTER_S`, then continues it (``SIGCONT``). If the calls still struggle after
  :data:`PROBE_S` with the build stopped, the build is not what starves them (other work on the machine
  is): it continues, and pressure is ignored for :data:`GRACE_S`, so builds finish on a busy machine too.

Progress comes from the worker's JSON lines and goes to subscribers (the
websocket) as ``build`` events, the same dicts ``GET /api/avatars/jobs/{job}``
returns. A build that fails says why, in the job (``error``) and in the log.
A finished build is moved into the library in one rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engines.library.store import AvatarLibrary, LibraryError

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
KEEP_FINISHED = 100  # finished jobs remembered for GET /api/avatars/jobs/{job}
DEFAULT_TIMEOUT_S = 1800.0  # of running time (paused time is not counted)
GOVERN_PERIOD_S = 0.1  # how often the live calls' health is checked while a build runs
RESUME_AFTER_S = 1.0  # healthy calls for this long before a paused build continues
PROBE_S = 5.0  # calls that still struggle this long with the build stopped: the build is not the cause
GRACE_S = 10.0  # then the build runs this long (at idle priority) before pressure may pause it again
THREAD_ENV = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ORT_NUM_THREADS",
)

Listener = Callable[[dict[str, Any]], None]


class JobNotFoundError(LibraryError):
    status = 404


@dataclass
class BuildJob:
    """One build: what it makes, where it is in the queue, how far it got, why it failed."""

    id: str
    avatar_id: str  # the id the avatar gets in the library when the build succeeds
    name: str
    kind: str  # photo | video
    voice: str | None
    source: Path  # the checked upload (in the job's work directory)
    workdir: Path  # the job's private staging directory (removed when it ends)
    state: JobState = "queued"
    stage: str = "queued"
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    builder: str = ""
    voice_match: dict[str, Any] | None = None  # {voice, similarity, scores}: chosen from the video's audio
    paused: bool = False  # stopped right now because live calls need the CPU
    paused_s: float = 0.0  # time spent paused so far
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    position: int = 0  # jobs ahead of this one (0: running or next)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "build",
            "job": self.id,
            "avatar": self.avatar_id,
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "stage": self.stage,
            "progress": round(self.progress, 3),
            "position": self.position,
            "message": self.message,
            "error": self.error,
            "builder": self.builder,
            "voice": self.voice,
            "voice_match": self.voice_match,
            "paused": self.paused,
            "paused_s": round(self.paused_s, 1),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


def default_worker_command(job: BuildJob, match_voices: Path | None = None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "engines.library.build_worker",
        "--source",
        str(job.source),
        "--kind",
        job.kind,
        "--out",
        str(job.workdir / "out"),
    ]
    if match_voices is not None:
        cmd += ["--match-voices", str(match_voices)]
    return cmd


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Signal the build's whole process group (the worker and, e.g., its face-landmark process)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def lower_priority() -> None:
    """In the child, before exec: the idle scheduling class (Linux), else the weakest nice level."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


class BuildQueue:
    """Runs builds one at a time in low-priority processes; jobs, positions, progress events."""

    def __init__(
        self,
        library: AvatarLibrary,
        command: Callable[[BuildJob], Sequence[str]] = default_worker_command,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        low_priority: bool = True,
        threads: int = 1,
        voices: Callable[[], Sequence[Any]] | None = None,
        default_voice: Callable[[], str | None] | None = None,
        pressure: Callable[[], bool] | None = None,
    ) -> None:
        """``voices``: the installed Piper voices (engines.voices.Voice); a video built without a chosen
        voice gets the one closest to the person's own (engines.speaker) when there are two or more."""
        self.library = library
        self._command = command
        self._voices = voices
        self._default_voice = default_voice
        self.pressure = pressure  # True while live calls need the CPU: the running build is paused
        self.timeout_s = timeout_s
        self.low_priority = low_priority
        self.threads = threads
        self._jobs: OrderedDict[str, BuildJob] = OrderedDict()
        self._waiting: deque[BuildJob] = deque()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._listeners: list[Listener] = []
        self.running: BuildJob | None = None
        self.completed = 0
        self.failed = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._runner is None:
            self._wake = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="avatar-builds")
            self._runner.add_done_callback(self._runner_ended)

    def _runner_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("builds: the build queue stopped: %r", task.exception())

    async def close(self) -> None:
        """Stop the running build (its process is killed) and cancel the queued ones."""
        for job in list(self._waiting):
            self._finish(job, "cancelled", "the server is shutting down")
        self._waiting.clear()
        if self._proc is not None and self._proc.returncode is None:
            _signal_group(self._proc, signal.SIGKILL)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    # --- jobs ------------------------------------------------------------------------------------
    def submit(self, source: Path, kind: str, name: str, voice: str | None, workdir: Path) -> BuildJob:
        """Queue a build of a checked upload (``source`` inside ``workdir``, which the job then owns)."""
        if self._wake is None:
            raise RuntimeError("BuildQueue.start() was not called")
        job = BuildJob(
            id=os.urandom(6).hex(),
            avatar_id=self.library.new_id(),
            name=name,
            kind=kind,
            voice=voice,
            source=source,
            workdir=workdir,
        )
        self._jobs[job.id] = job
        self._waiting.append(job)
        self._update_positions()
        self._forget_old()
        logger.info("builds: queued %s (%s %r, %d ahead)", job.id, kind, name, job.position)
        self._wake.set()
        return job

    def get(self, job_id: str) -> BuildJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no build job {job_id!r}")
        return job

    def jobs(self) -> list[BuildJob]:
        return list(self._jobs.values())

    def cancel(self, job_id: str) -> BuildJob:
        """Cancel a queued job, or kill a running one."""
        job = self.get(job_id)
        if job in self._waiting:
            self._waiting.remove(job)
            self._finish(job, "cancelled", "cancelled")
            self._update_positions()
        elif job is self.running:
            job.error = "cancelled"  # seen by _build, also if its process is still being started
            if self._proc is not None and self._proc.returncode is None:
                _signal_group(self._proc, signal.SIGKILL)
        return job

    @property
    def active(self) -> int:
        """Builds running or waiting."""
        return len(self._waiting) + (1 if self.running is not None else 0)

    def subscribe(self, job_id: str) -> asyncio.Queue[dict[str, Any]]:
        """Progress events of one job (the first is its current state)."""
        job = self.get(job_id)
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.setdefault(job_id, set()).add(q)
        q.put_nowait(job.to_json())
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue[dict[str, Any]]) -> None:
        subs = self._subscribers.get(job_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self._subscribers[job_id]

    def add_listener(self, fn: Listener) -> None:
        """Called with every event of every job (e.g. admission control, metrics)."""
        self._listeners.append(fn)

    def _publish(self, job: BuildJob) -> None:
        event = job.to_json()
        for q in list(self._subscribers.get(job.id, ())):
            if q.qsize() < 256:
                q.put_nowait(event)
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:
                logger.exception("builds: a listener failed")

    def _update_positions(self) -> None:
        ahead = 1 if self.running is not None else 0
        for k, job in enumerate(self._waiting):
            if job.position != ahead + k or job.stage == "queued":
                job.position = ahead + k
                job.message = "waiting for the build before it" if job.position else "starting"
                self._publish(job)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.id]

    def _finish(self, job: BuildJob, state: JobState, error: str | None = None) -> None:
        job.state = state
        job.finished = time.time()
        job.position = 0
        if state == "done":
            job.progress, job.stage, job.message = 1.0, "done", "ready"
        else:
            job.error = error or job.error or "the build failed"
            job.stage, job.message = state, job.error
        shutil.rmtree(job.workdir, ignore_errors=True)
        self._publish(job)

    # --- the runner ------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            job = self._waiting.popleft()
            self.running = job
            self._update_positions()
            try:
                await self._build(job)
            except asyncio.CancelledError:
                self._finish(job, "cancelled", "the server is shutting down")
                raise
            except Exception as exc:  # a bug here must not stop the queue
                logger.exception("builds: job %s failed unexpectedly", job.id)
                self._finish(job, "failed", f"internal error: {exc}")
            finally:
                self.running = None
                self._proc = None
            self._update_positions()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in THREAD_ENV:
            env[name] = str(self.threads)
        return env

    async def _build(self, job: BuildJob) -> None:
        job.state, job.stage, job.started, job.position = "running", "starting", time.time(), 0
        job.message = "starting the build"
        self._publish(job)
        cmd = list(self._command(job))
        if (
            job.kind == "video"
            and job.voice is None
            and self._voices is not None
            and self._command is default_worker_command
        ):
            candidates = [
                {"id": v.id, "model": str(v.model), "config": str(v.config)} for v in self._voices()
            ]
            if len(candidates) > 1:
                listing = job.workdir / "voices.json"
                listing.write_text(json.dumps(candidates))
                cmd = default_worker_command(job, listing)
        logger.info("builds: running %s: %s", job.id, " ".join(cmd))
        self._proc = proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(),
            preexec_fn=lower_priority if self.low_priority else None,
            start_new_session=True,  # its own process group: pause, resume and stop it with its children
        )
        if job.error == "cancelled":  # cancelled while the process was being started
            _signal_group(proc, signal.SIGKILL)
        stderr_tail: deque[str] = deque(maxlen=40)
        result: dict[str, Any] = {}

        async def read_stdout() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    stderr_tail.append(line)
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "progress":
                    job.stage = str(event.get("stage", job.stage))[:40]
                    job.progress = max(job.progress, min(0.99, float(event.get("fraction", job.progress))))
                    job.message = str(event.get("message", ""))[:200]
                    self._publish(job)
                elif event.get("type") == "voice" and job.voice is None:
                    chosen = str(event.get("voice") or "")
                    job.voice_match = {k: event.get(k) for k in ("voice", "similarity", "scores")}
                    default = self._default_voice() if self._default_voice is not None else None
                    job.voice = chosen if chosen and chosen != default else None
                    job.message = f"voice: {chosen} (similarity {event.get('similarity')})"
                    self._publish(job)
                elif event.get("type") in ("done", "error"):
                    result.update(event)

        async def read_stderr() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

        governor = asyncio.get_running_loop().create_task(self._govern(proc, job))
        try:
            await asyncio.gather(read_stdout(), read_stderr(), proc.wait())
        finally:
            governor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await governor
            job.paused = False
        if governor.done() and not governor.cancelled() and governor.result():
            result = {
                "type": "error",
                "message": f"the build took longer than {self.timeout_s:.0f} s and was stopped",
            }
        if job.error == "cancelled":
            self._finish(job, "cancelled", "cancelled")
            return
        if result.get("type") == "done" and proc.returncode == 0:
            await self._install(job, result)
            return
        reason = str(result.get("message") or "")
        if not reason:
            tail = [line for line in stderr_tail if line.strip()][-3:]
            reason = f"the build process exited with status {proc.returncode}" + (
                f": {' | '.join(tail)[-400:]}" if tail else ""
            )
        self.failed += 1
        logger.warning("builds: job %s (%r) failed: %s", job.id, job.name, reason)
        if stderr_tail:
            logger.debug("builds: job %s stderr:\n%s", job.id, "\n".join(stderr_tail))
        self._finish(job, "failed", reason)

    async def _govern(self, proc: asyncio.subprocess.Process, job: BuildJob) -> bool:
        """Pause the build while live calls struggle (see the module docstring); stop it once its running
        time passes the timeout (True then)."""
        loop = asyncio.get_running_loop()
        ran = 0.0
        last = loop.time()
        paused_at = healthy_since = 0.0
        grace_until = 0.0
        try:
            while proc.returncode is None:
                await asyncio.sleep(GOVERN_PERIOD_S)
                now = loop.time()
                if job.paused:
                    job.paused_s += now - last
                else:
                    ran += now - last
                last = now
                if ran > self.timeout_s:
                    _signal_group(proc, signal.SIGKILL)
                    return True
                busy = bool(self.pressure()) if self.pressure is not None else False
                if not job.paused:
                    if busy and now >= grace_until:
                        _signal_group(proc, signal.SIGSTOP)
                        job.paused, paused_at, healthy_since = True, now, 0.0
                        job.message = "paused: live calls need the CPU"
                        self._publish(job)
                    continue
                if busy:
                    healthy_since = 0.0
                    if now - paused_at < PROBE_S:
                        continue
                    # the calls struggle with the build stopped: something else loads the machine
                    grace_until = now + GRACE_S
                    job.message = "continuing: the machine is busy with other work"
                else:
                    healthy_since = healthy_since or now
                    if now - healthy_since < RESUME_AFTER_S:
                        continue
                    job.message = "continuing"
                _signal_group(proc, signal.SIGCONT)
                job.paused = False
                self._publish(job)
        finally:
            if job.paused and proc.returncode is None:
                _signal_group(proc, signal.SIGCONT)  # never leave a stopped process behind
        return False

    async def _install(self, job: BuildJob, result: dict[str, Any]) -> None:
        out = job.workdir / "out"
        job.builder = str(result.get("builder") or "")
        try:
            await asyncio.to_thread(
                self.library.add,
                out / "avatar.safetensors",
                job.name,
                job.kind,
                voice=job.voice,
                preview=out / "preview.png",
                avatar_id=job.avatar_id,
                builder=job.builder,
                gaussians=int(result.get("gaussians") or 0),
                move=True,
            )
        except (LibraryError, OSError) as exc:
            self.failed += 1
            logger.warning("builds: job %s built but could not be stored: %s", job.id, exc)
            self._finish(job, "failed", f"the avatar was built but could not be stored: {exc}")
            return
        self.completed += 1
        logger.info(
            "builds: job %s done: avatar %s (%r) in %.0f s",
            job.id,
            job.avatar_id,
            job.name,
            time.time() - (job.started or job.created),
        )
        self._finish(job, "done")

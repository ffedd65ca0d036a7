"""The build queue: one low-priority process at a time, positions, progress, failure reasons, install.

Most tests run a small stand-in worker script (it prints the worker's JSON-line
protocol and copies a synthetic avatar) so the queue's behaviour is checked
in seconds; one test runs the real worker on the astronaut photo.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engines.library.builds import BuildJob, BuildQueue, JobNotFoundError
from engines.library.store import DEFAULT_ID, AvatarLibrary
from engines.splat.avatar import load_avatar, save_avatar
from engines.splat.synthetic import make_test_avatar

FAKE_WORKER = textwrap.dedent(
    """
    import json, os, shutil, sys, time
    src, out, mode, gate = sys.argv[1:5]
    os.makedirs(out, exist_ok=True)
    def emit(**e): print(json.dumps(e), flush=True)
    # report the scheduling class and the thread env the queue gave us
    emit(type="progress", stage="env", fraction=0.1,
         message=f"policy={os.sched_getscheduler(0)} numba={os.environ.get('NUMBA_NUM_THREADS')}")
    while gate != "-" and not os.path.exists(gate):
        time.sleep(0.02)
    if mode == "fail":
        emit(type="error", message="no face found in the photo; use a frontal portrait")
        sys.exit(1)
    if mode == "crash":
        print("Traceback: something exploded", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    if mode == "tick":  # steady work: a progress line every 50 ms for 2 s of running time
        for k in range(40):
            emit(type="progress", stage="tick", fraction=0.1 + 0.02 * k, message=f"tick {k}")
            time.sleep(0.05)
    emit(type="progress", stage="photo", fraction=0.5, message="half way")
    shutil.copyfile(src, os.path.join(out, "avatar.safetensors"))
    open(os.path.join(out, "preview.png"), "wb").write(b"png")
    emit(type="done", gaussians=800, builder="fake", seconds=0.1)
    """
)


@pytest.fixture
def library(tmp_path: Path) -> AvatarLibrary:
    return AvatarLibrary(tmp_path / "avatars")


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "small.safetensors"
    save_avatar(make_test_avatar(n_gaussians=800), path)
    return path


def _queue(
    library: AvatarLibrary, tmp_path: Path, modes: dict[str, str], gates: dict[str, Path], **kw: Any
) -> BuildQueue:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)

    def command(job: BuildJob) -> list[str]:
        gate = gates.get(job.name)
        return [
            sys.executable,
            str(script),
            str(job.source),
            str(job.workdir / "out"),
            modes.get(job.name, "ok"),
            str(gate) if gate else "-",
        ]

    return BuildQueue(library, command=command, **kw)


def _submit(queue: BuildQueue, library: AvatarLibrary, avatar_file: Path, name: str) -> BuildJob:
    work = library.staging_dir("job")
    source = work / "upload.safetensors"
    source.write_bytes(avatar_file.read_bytes())
    return queue.submit(source, "photo", name, "voice-b" if name == "a" else None, work)


async def _until(cond: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


async def test_one_at_a_time_with_positions_then_installed(
    library: AvatarLibrary, avatar_file: Path, tmp_path: Path
) -> None:
    gates = {"a": tmp_path / "gate-a", "b": tmp_path / "gate-b"}
    queue = _queue(library, tmp_path, {}, gates)
    queue.start()
    try:
        a = _submit(queue, library, avatar_file, "a")
        b = _submit(queue, library, avatar_file, "b")
        c = _submit(queue, library, avatar_file, "c")
        events = queue.subscribe(c.id)
        await _until(lambda: a.state == "running" and a.stage == "env")
        assert (a.position, b.position, c.position) == (0, 1, 2)
        assert b.state == c.state == "queued" and queue.active == 3
        # the worker runs in the idle scheduling class with one thread
        assert a.message == f"policy={os.SCHED_IDLE} numba=1"
        gates["a"].touch()
        await _until(lambda: b.state == "running")
        assert a.state == "done" and a.progress == 1.0 and (b.position, c.position) == (0, 1)
        gates["b"].touch()
        await _until(lambda: c.state == "done")
        entries = {e.id: e for e in library.list()}
        assert set(entries) == {DEFAULT_ID, a.avatar_id, b.avatar_id, c.avatar_id}
        assert entries[a.avatar_id].name == "a" and entries[a.avatar_id].voice == "voice-b"
        assert entries[a.avatar_id].source == "photo" and entries[a.avatar_id].preview is not None
        assert load_avatar(entries[c.avatar_id].path).count > 0
        assert not a.workdir.exists()  # staging cleaned
        seen = []
        while not events.empty():
            seen.append(events.get_nowait())
        positions = [e["position"] for e in seen if e["state"] == "queued"]
        assert positions[0] == 2 and 1 in positions  # c moved up the queue and was told so
        assert [e["state"] for e in seen][-1] == "done" and seen[-1]["avatar"] == c.avatar_id
        progress = [e["progress"] for e in seen]
        assert progress == sorted(progress)  # never goes backwards
        assert queue.active == 0 and queue.completed == 3
    finally:
        await queue.close()


async def test_failures_say_why_and_leave_nothing(
    library: AvatarLibrary, avatar_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = _queue(library, tmp_path, {"noface": "fail", "crash": "crash"}, {})
    queue.start()
    try:
        bad = _submit(queue, library, avatar_file, "noface")
        crash = _submit(queue, library, avatar_file, "crash")
        good = _submit(queue, library, avatar_file, "fine")
        await _until(lambda: good.state == "done")
        assert bad.state == "failed" and bad.error is not None and "no face found" in bad.error
        assert crash.state == "failed" and crash.error is not None
        assert "status 3" in crash.error and "something exploded" in crash.error
        assert [e.name for e in library.list()[1:]] == ["fine"]
        assert not bad.workdir.exists() and not crash.workdir.exists()
        assert "no face found" in caplog.text  # the reason is in the log too
        assert queue.failed == 2
    finally:
        await queue.close()


async def test_timeout_cancel_and_close(library: AvatarLibrary, avatar_file: Path, tmp_path: Path) -> None:
    queue = _queue(library, tmp_path, {"slow": "hang", "later": "hang"}, {}, timeout_s=2.0)
    queue.start()
    try:
        slow = _submit(queue, library, avatar_file, "slow")
        later = _submit(queue, library, avatar_file, "later")
        queued = _submit(queue, library, avatar_file, "queued")
        queue.cancel(queued.id)
        assert queued.state == "cancelled" and not queued.workdir.exists()
        await _until(lambda: slow.state == "failed")
        assert slow.error is not None and "longer than 2 s" in slow.error
        await _until(lambda: later.state == "running")
        queue.cancel(later.id)  # kills the running process
        await _until(lambda: later.state == "cancelled")
        with pytest.raises(JobNotFoundError):
            queue.get("nope")
        last = _submit(queue, library, avatar_file, "slow")
        await _until(lambda: last.state == "running")
    finally:
        await queue.close()
    assert last.state == "cancelled"
    assert [e.id for e in library.list()] == [DEFAULT_ID]


@pytest.fixture(scope="module")
def face_detector() -> None:
    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")


@pytest.mark.slow
async def test_real_worker_builds_from_a_photo(
    library: AvatarLibrary, tmp_path: Path, face_detector: None
) -> None:
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    queue = BuildQueue(library)
    queue.start()
    try:
        work = library.staging_dir("job")
        Image.fromarray(skimage.data.astronaut()).save(work / "upload.jpg", quality=92)
        job = queue.submit(work / "upload.jpg", "photo", "Astronaut", None, work)
        events = queue.subscribe(job.id)
        await _until(lambda: job.state in ("done", "failed"), timeout=400)
        assert job.state == "done", job.error
        entry = library.get(job.avatar_id)
        avatar = load_avatar(entry.path)
        assert avatar.count > 10_000 and entry.gaussians == avatar.count
        assert entry.builder == "engines.create.photo"
        assert entry.preview is not None
        with Image.open(entry.preview) as im:
            assert im.size == (256, 256)
        stages = set()
        while not events.empty():
            stages.add(events.get_nowait()["stage"])
        assert {"photo", "preview", "done"} <= stages
    finally:
        await queue.close()


def _state(pid: int) -> str:
    """The process state letter from /proc (R running, S sleeping, T stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_a_build_pauses_while_live_calls_struggle(
    library: AvatarLibrary, avatar_file: Path, tmp_path: Path
) -> None:
    busy = {"now": False}
    queue = _queue(library, tmp_path, {"paced": "tick"}, {}, pressure=lambda: busy["now"])
    queue.start()
    try:
        job = _submit(queue, library, avatar_file, "paced")
        await _until(lambda: job.stage == "tick")
        busy["now"] = True  # a session's frames come late
        await _until(lambda: job.paused)
        assert queue._proc is not None
        pid = queue._proc.pid
        await _until(lambda: _state(pid) == "T")  # the worker is stopped (SIGSTOP to its process group)
        progress = job.progress
        await asyncio.sleep(0.6)
        assert job.progress == progress and job.state == "running"  # no work while paused
        assert job.to_json()["paused"] is True and "live calls" in job.message
        busy["now"] = False  # healthy again: it continues after RESUME_AFTER_S
        await _until(lambda: not job.paused)
        await _until(lambda: job.state == "done")
        assert job.paused_s >= 0.6 and job.progress == 1.0
    finally:
        await queue.close()


async def test_a_build_continues_when_pausing_it_does_not_help(
    library: AvatarLibrary, avatar_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that struggle with the build stopped are starved by something else: the build goes on."""
    from engines.library import builds

    monkeypatch.setattr(builds, "PROBE_S", 0.5)
    monkeypatch.setattr(builds, "GRACE_S", 0.3)
    queue = _queue(library, tmp_path, {"paced": "tick"}, {}, pressure=lambda: True)  # always struggling
    queue.start()
    try:
        job = _submit(queue, library, avatar_file, "paced")
        events = queue.subscribe(job.id)
        await _until(lambda: job.state == "done", timeout=60)
        messages = []
        while not events.empty():
            messages.append(events.get_nowait()["message"])
        assert "paused: live calls need the CPU" in messages
        assert "continuing: the machine is busy with other work" in messages
        assert job.paused_s >= 0.5
    finally:
        await queue.close()

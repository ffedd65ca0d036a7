"""The separate mediapipe environment used for face landmarks, run as a subprocess.

mediapipe 0.10.21 pins ``protobuf<5`` and ``numpy<2``; the runtime
environment needs protobuf ≥ 5.29 (pipecat) and numpy 2. So avatar creation
keeps mediapipe in its own virtual environment, created on first use under
``$SPLATCAST_CACHE_DIR/envs/mediapipe-0.10.21`` (default
``~/.cache/splatcast/envs/mediapipe-0.10.21``; about 0.4 GB and a minute or
two to install), and runs ``landmarks_worker.py`` there. Creation is idempotent and guarded by a file
lock, so two processes never build it at once. The runtime environment
never imports mediapipe.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
# mediapipe itself is installed without its declared dependencies: face mesh needs only these
# (jax, jaxlib, sentencepiece and sounddevice serve other solutions and would double the size).
MEDIAPIPE = f"mediapipe=={MEDIAPIPE_VERSION}"
REQUIREMENTS = (
    "numpy<2",
    "protobuf>=4.25.3,<5",
    "absl-py",
    "attrs>=19.1.0",
    "flatbuffers>=2.0",
    "opencv-python-headless",
    "matplotlib",  # imported by mediapipe.python.solutions.drawing_utils
)
ENV_NAME = f"mediapipe-{MEDIAPIPE_VERSION}"
WORKER = Path(__file__).resolve().parent / "landmarks_worker.py"
READY_MARKER = ".splatcast-ready"


class FaceEnvError(RuntimeError):
    """The mediapipe environment could not be created or the landmark worker failed."""


@dataclass(frozen=True)
class Landmarks:
    """Face landmarks of one image: one [478, 3] float64 array (x_px, y_px, z_px) per face found."""

    width: int
    height: int
    faces: list[np.ndarray]


def cache_dir() -> Path:
    """Root of splatcast's per-user cache (``$SPLATCAST_CACHE_DIR`` or ``~/.cache/splatcast``)."""
    env = os.environ.get("SPLATCAST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "splatcast"


def env_dir() -> Path:
    return cache_dir() / "envs" / ENV_NAME


def env_python(root: Path | None = None) -> Path:
    root = env_dir() if root is None else root
    return root / "bin" / "python"


def _run(cmd: list[str], what: str, timeout: float) -> None:
    logger.debug("face_env: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaceEnvError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "")[-2000:]
        raise FaceEnvError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def ensure_env(notify: Callable[[str], None] | None = None, timeout: float = 900.0) -> Path:
    """The mediapipe environment's Python, creating the environment first if needed.

    ``notify`` receives human-readable progress messages (the CLI prints them).
    Needs network access to PyPI the first time only.
    """
    root = env_dir()
    python = env_python(root)
    if (root / READY_MARKER).exists() and python.exists():
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f"{ENV_NAME}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
        try:
            if (root / READY_MARKER).exists() and python.exists():
                return python
            say = notify or (lambda msg: logger.info("face_env: %s", msg))
            say(
                f"creating the face-landmark environment (mediapipe {MEDIAPIPE_VERSION}) in {root}; once only"
            )
            start = time.monotonic()
            if root.exists():
                shutil.rmtree(root)  # a half-built environment from an interrupted run
            _run([sys.executable, "-m", "venv", str(root)], "creating the virtual environment", 300)
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run([*pip, "--no-deps", MEDIAPIPE], f"installing {MEDIAPIPE} (needs PyPI access once)", timeout)
            _run([*pip, *REQUIREMENTS], f"installing {' '.join(REQUIREMENTS)}", timeout)
            (root / READY_MARKER).write_text(MEDIAPIPE_VERSION + "\n")
            say(f"face-landmark environment ready ({time.monotonic() - start:.0f} s)")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


def detect_landmarks(
    image_path: str | Path,
    max_faces: int = 4,
    notify: Callable[[str], None] | None = None,
    timeout: float = 120.0,
) -> Landmarks:
    """Run the mediapipe face mesh (478 refined landmarks) on an image file in the separate environment."""
    path = Path(image_path)
    if not path.is_file():
        raise FaceEnvError(f"image not found: {path}")
    python = ensure_env(notify)
    cmd = [str(python), str(WORKER), str(path), str(int(max_faces))]
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaceEnvError(f"the landmark worker failed to run: {exc}") from exc
    if proc.returncode != 0:
        raise FaceEnvError(f"the landmark worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        faces = [np.asarray(f["landmarks"], dtype=np.float64) for f in out["faces"]]
        result = Landmarks(int(out["width"]), int(out["height"]), faces)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise FaceEnvError(
            f"the landmark worker printed something unexpected: {proc.stdout[-500:]!r}"
        ) from exc
    for f in result.faces:
        if f.shape != (478, 3):
            raise FaceEnvError(f"expected 478 landmarks per face, got {f.shape}")
    return result

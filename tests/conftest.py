"""Shared pytest fixtures."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from realtime.conversation.services import SpeechModels

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def speech_models() -> SpeechModels:
    """The bundled Whisper, Piper, VAD and Smart Turn models, loaded once for the whole run."""
    from realtime.conversation.services import SpeechModels

    return SpeechModels.load()


@pytest.fixture(scope="session")
def mediapipe_env() -> Path:
    """The mediapipe face-mesh environment (its own venv: mediapipe pins protobuf<5), made once; the test
    skips with the reason where it cannot be made (no PyPI access and no cached environment)."""
    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        return ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")

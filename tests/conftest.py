"""Shared pytest fixtures."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from realtime.conversation.services import SpeechModels

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def speech_models() -> SpeechModels:
    """The bundled Whisper, Piper, VAD and Smart Turn models, loaded once for the whole run."""
    from realtime.conversation.services import SpeechModels

    return SpeechModels.load()

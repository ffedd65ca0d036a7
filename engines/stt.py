"""Speech to text with faster-whisper: the bundled tiny.en model, loaded once per process.

The model (CTranslate2 int8 on the CPU) is loaded once and shared: it is
read-only, and CTranslate2 serialises concurrent calls on its own worker, so
every session can call :meth:`WhisperSTT.transcribe` from its own thread.

Example::

    stt = WhisperSTT.load()
    text = stt.transcribe(pcm)   # pcm: [N] float32 in [-1, 1] at 16 kHz mono
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper listens at


class STTError(RuntimeError):
    """faster-whisper could not be loaded or was given audio it cannot use."""


class WhisperSTT:
    """A loaded faster-whisper model that turns a segment of speech into text."""

    def __init__(self, model: Any, language: str | None = "en", no_speech_threshold: float = 0.6) -> None:
        self._model = model
        self._language = language
        self._no_speech_threshold = no_speech_threshold

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
    ) -> WhisperSTT:
        """Load a CTranslate2 Whisper model directory (default: the bundled tiny.en). Never downloads."""
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # pragma: no cover - faster-whisper is a core dependency
            raise STTError("faster-whisper is not installed: pip install 'faster-whisper>=1.2,<2'") from exc
        if path is None:
            from engines.assets import whisper_model_dir

            path = whisper_model_dir()
        if not (Path(path) / "model.bin").exists():
            raise STTError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
        model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        logger.info("WhisperSTT: loaded %s (%s, %s)", Path(path).name, device, compute_type)
        return cls(model)

    def transcribe(self, pcm: np.ndarray) -> str:
        """Text of one speech segment (stripped; "" when Whisper heard no speech).

        pcm: [N] float32 in [-1, 1], 16 kHz mono.
        """
        audio = np.asarray(pcm)
        if audio.ndim != 1:
            raise STTError(f"transcribe expects mono [N] audio, got shape {audio.shape}")
        if audio.dtype != np.float32:
            raise STTError(f"transcribe expects float32 audio in [-1, 1], got {audio.dtype}")
        if audio.size == 0:
            return ""
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=1,
            condition_on_previous_text=False,
            vad_filter=False,  # the conversation's Silero VAD already cut the segment
            without_timestamps=True,
        )
        parts = [s.text.strip() for s in segments if s.no_speech_prob < self._no_speech_threshold]
        return " ".join(p for p in parts if p)

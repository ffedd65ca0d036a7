"""The user's microphone audio, as the conversation pipeline hears it: 16 kHz mono 16-bit PCM.

Audio arrives from the browser through aiortc as ``av.AudioFrame`` (48 kHz,
s16, mono or stereo, packed or planar, 20 ms) or from tests and other callers
as numpy arrays. :class:`MicAudioConverter` mixes it down to mono and
resamples it with a streaming resampler (its state carries across frames, so
20 ms frames join without clicks).
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

PIPELINE_SAMPLE_RATE = 16_000  # Silero VAD, Smart Turn and Whisper all listen at 16 kHz


class MicAudioError(ValueError):
    """Audio in a shape, dtype or rate the converter cannot use."""


def _to_mono_float(audio: np.ndarray, channels: int) -> np.ndarray:
    """[N] float32 in [-1, 1] from int16/int32/float audio shaped [N], [N*C] interleaved or [C, N]."""
    if audio.dtype == np.int16:
        x = audio.astype(np.float32) / 32768.0
    elif audio.dtype == np.int32:
        x = audio.astype(np.float32) / 2147483648.0
    elif audio.dtype in (np.float32, np.float64):
        x = audio.astype(np.float32, copy=False)
    else:
        raise MicAudioError(f"unsupported audio dtype {audio.dtype}; use int16 or float32")
    if x.ndim == 2:
        if x.shape[0] == channels and channels > 1:  # planar [C, N]
            return x.mean(axis=0)
        x = x.reshape(-1)  # packed [1, N*C]
    if x.ndim != 1:
        raise MicAudioError(f"audio must be [N], [1, N*C] or [C, N]; got shape {audio.shape}")
    if channels > 1:
        if x.size % channels:
            raise MicAudioError(f"{x.size} interleaved samples do not split into {channels} channels")
        x = x.reshape(-1, channels).mean(axis=1)
    return x


class MicAudioConverter:
    """Turns microphone frames into 16 kHz mono int16 PCM bytes, one call per frame."""

    def __init__(self, out_rate: int = PIPELINE_SAMPLE_RATE) -> None:
        self._out_rate = out_rate
        self._in_rate = 0
        self._resampler: Any = None

    def convert(self, audio: Any, sample_rate: int | None = None, channels: int = 1) -> bytes:
        """PCM bytes (int16 mono at ``out_rate``) for one frame.

        audio: an ``av.AudioFrame`` (its own rate and layout are used), or a numpy
        array: [N] mono, [N*C] interleaved (give ``channels``) or [C, N] planar,
        int16 or float32 in [-1, 1], at ``sample_rate``.
        """
        if isinstance(audio, av.AudioFrame):
            channels = len(audio.layout.channels)
            sample_rate = int(audio.sample_rate)
            samples = audio.to_ndarray()
        else:
            samples = np.asarray(audio)
        if not sample_rate or sample_rate <= 0:
            raise MicAudioError("give the audio's sample_rate (Hz)")
        mono = _to_mono_float(samples, channels)  # [N] float32
        if sample_rate != self._out_rate:
            mono = self._resample(mono, sample_rate)
        return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16).tobytes()

    def _resample(self, mono: np.ndarray, rate: int) -> np.ndarray:
        if rate != self._in_rate or self._resampler is None:
            import soxr  # ships with pipecat-ai

            self._resampler = soxr.ResampleStream(
                rate, self._out_rate, 1, dtype="float32", quality="MQ"
            )  # 15 ms delay
            self._in_rate = rate
        return np.asarray(self._resampler.resample_chunk(mono), dtype=np.float32).reshape(-1)

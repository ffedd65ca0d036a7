"""Speech to text with faster-whisper: the bundled tiny.en model, loaded once per process.

The model (CTranslate2 int8 on the CPU) is loaded once and shared: it is
read-only, and CTranslate2 serialises concurrent calls on its own worker, so
every session can call :meth:`WhisperSTT.transcribe` from its own thread.

**A window as long as the speech, not 30 s.** faster-whisper pads every input
to Whisper's 30 s window, and the encoder's cost grows faster than linearly
with its input: on this 2-core CPU, tiny.en's encoder takes ~480 ms of CPU on
3000 mel frames, ~100 ms on 1500 and ~60 ms on 1000. CTranslate2's encoder
takes shorter inputs, so a segment of at most ``window_s`` − 1 s is
transcribed in one window of ``window_s`` seconds (the speech, then at least
1 s of silence): a 2–4 s turn costs ~175 ms of CPU instead of ~510. Measured
on 20 sentences × 4 voices (Piper, three espeak-ng voices), greedy decoding:
a 15 s window gave the 30 s window's word error rate (5.8 % on Piper, within
±2.5 points on espeak-ng), while 10 s or shorter made tiny.en loop on short
phrases ("Hello there. Hello there. …") unless the temperature fallback
rescued it. Longer segments take faster-whisper's own path (30 s windows, one
after another).

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
FULL_WINDOW_S = 30.0  # Whisper's own window
DEFAULT_WINDOW_S = 15.0  # the shortest window that transcribed as well as 30 s (module docstring)
TAIL_S = 1.0  # at least this much silence after the speech inside the window
FRAMES_PER_S = 100  # Whisper's mel frames per second (hop of 160 samples at 16 kHz)


class STTError(RuntimeError):
    """faster-whisper could not be loaded or was given audio it cannot use."""


def window_frames(samples: int, window_s: float = DEFAULT_WINDOW_S) -> int | None:
    """Mel frames of the one encoder window for ``samples`` of 16 kHz speech; None: use 30 s windows."""
    need = samples / SAMPLE_RATE + TAIL_S
    if window_s >= FULL_WINDOW_S or need > FULL_WINDOW_S:
        return None
    return round(max(window_s, need) * FRAMES_PER_S)


class WhisperSTT:
    """A loaded faster-whisper model that turns a segment of speech into text."""

    def __init__(
        self,
        model: Any,
        language: str | None = "en",
        no_speech_threshold: float = 0.6,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        """``window_s``: the encoder window of a short segment (module docstring); 30 = faster-whisper's."""
        if not 1.0 <= window_s <= FULL_WINDOW_S:
            raise STTError(f"window_s must be 1..{FULL_WINDOW_S:g} seconds, got {window_s}")
        self._model = model
        self._language = language
        self._no_speech_threshold = no_speech_threshold
        self.window_s = window_s
        self._decoding: tuple[Any, Any] | None = None  # (tokenizer, options), built on first use

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        window_s: float = DEFAULT_WINDOW_S,
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
        return cls(model, window_s=window_s)

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
        frames = window_frames(audio.size, self.window_s)
        if frames is not None:
            return self._transcribe_window(audio, frames)
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

    def _transcribe_window(self, audio: np.ndarray, frames: int) -> str:
        """One encoder window of ``frames`` mel frames (the speech, then silence), decoded as
        faster-whisper decodes each of its windows (greedy, temperature fallback on repetition)."""
        model = self._model
        tokenizer, options = self._decoding_setup()
        features = model.feature_extractor(audio)  # [80, n]
        window = np.zeros((features.shape[0], frames), dtype=np.float32)
        used = min(frames, features.shape[1])
        window[:, :used] = features[:, :used]
        encoded = model.encode(window)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        result, _avg_logprob, _temperature, _ratio = model.generate_with_fallback(
            encoded, prompt, tokenizer, options
        )
        if result.no_speech_prob >= self._no_speech_threshold:
            return ""
        return str(tokenizer.decode(result.sequences_ids[0])).strip()

    def _decoding_setup(self) -> tuple[Any, Any]:
        """faster-whisper's tokenizer and its default decoding options, as ``transcribe`` above uses them."""
        if self._decoding is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

            model = self._model
            tokenizer = Tokenizer(
                model.hf_tokenizer,
                model.model.is_multilingual,
                task="transcribe",
                language=self._language or "en",
            )
            options = TranscriptionOptions(
                beam_size=1,
                best_of=5,
                patience=1.0,
                length_penalty=1.0,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                log_prob_threshold=-1.0,
                no_speech_threshold=self._no_speech_threshold,
                compression_ratio_threshold=2.4,
                condition_on_previous_text=False,
                prompt_reset_on_temperature=0.5,
                temperatures=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                initial_prompt=None,
                prefix=None,
                suppress_blank=True,
                suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
                without_timestamps=True,
                max_initial_timestamp=1.0,
                word_timestamps=False,
                prepend_punctuations="\"'“¿([{-",
                append_punctuations="\"'.。,，!！?？:：”)]}、",
                multilingual=False,
                max_new_tokens=None,
                clip_timestamps="0",
                hallucination_silence_threshold=None,
                hotwords=None,
            )
            self._decoding = (tokenizer, options)
        return self._decoding

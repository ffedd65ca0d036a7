"""A Piper voice run in two parts, so a sentence's audio can be decoded a window at a time.

A Piper voice is a VITS network. Its text encoder, stochastic duration
predictor and flow turn a sentence's phoneme ids into a latent ``z``
[1, C, frames] (one frame per ``hop_length`` samples; the random noise of
``noise_scale`` / ``noise_w`` is drawn here, once per sentence). Its
HiFi-GAN-style decoder turns ``z`` into audio, and that is where most of the
time goes: ~70 % of a 2.7 s sentence's synthesis here (joe-medium, one
thread: latent 66-73 ms, decoder 153-176 ms of thread CPU).

The decoder's receptive field is short. Decoding frames ``[s, e)`` with
:data:`CONTEXT_FRAMES` frames of ``z`` on either side gives the samples the
whole-``z`` decode gives (max |diff| 1.1e-6 on joe-medium from 12 frames of
context on, 0.0 from 32). So a sentence can be decoded window by window and
its first window played while the rest is decoded, with no join to hear.

:class:`TwoPartSession` stands in for the voice's onnxruntime session:
``run()`` does latent then decoder, returning what the one-part graph returns
(audio, and the per-phoneme-id frame counts the alignments come from), so
Piper's own code phonemises, maps ids and builds alignments as always. Inside
:meth:`TwoPartSession.latents` it skips the decoder and hands the latents out
instead, for :meth:`TwoPartSession.decode` to decode in windows.

Both parts are cut from the voice's graph in memory when it loads
(:func:`split_voice`); nothing is written or fetched.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

CONTEXT_FRAMES = 16  # latent frames decoded on each side of a window (exact from 12 on joe-medium)
DECODER_PREFIX = "/dec/"  # node names of the decoder in Piper's (VITS) exported graphs


def split_voice(model: Any) -> tuple[Any, Any, str]:
    """``model`` (an onnx ModelProto with the alignment output) cut at the decoder's input.

    Returns (latent part, decoder part, latent tensor name). The latent part
    keeps every output but the audio; the decoder part maps the latent to the
    audio. Raises ValueError for a graph whose decoder cannot be found (not a
    VITS export): the caller keeps the whole graph then.
    """
    from onnx.utils import Extractor

    graph = model.graph
    decoder = [n for n in graph.node if n.name.startswith(DECODER_PREFIX)]
    if not decoder:
        raise ValueError(f"no {DECODER_PREFIX} nodes in the voice graph")
    made = {o for n in decoder for o in n.output}
    weights = {i.name for i in graph.initializer}
    inputs = {i for n in decoder for i in n.input if i and i not in made and i not in weights}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    inputs -= constants
    if len(inputs) != 1:
        raise ValueError(f"the decoder takes {sorted(inputs)}, not one latent")
    latent = inputs.pop()
    audio = graph.output[0].name
    others = [o.name for o in graph.output[1:]]
    if not others:
        raise ValueError("the voice graph has no alignment output")
    extractor = Extractor(model)
    encoder_part = extractor.extract_model([i.name for i in graph.input], [latent, *others])
    decoder_part = extractor.extract_model([latent], [audio])
    return encoder_part, decoder_part, latent


class TwoPartSession:
    """A Piper voice's onnxruntime session as two: phoneme ids → latent, latent → audio."""

    def __init__(self, model: Any, hop_length: int, options: Any = None) -> None:
        import onnxruntime

        encoder_part, decoder_part, self.latent_name = split_voice(model)
        providers = ["CPUExecutionProvider"]
        self._encoder = onnxruntime.InferenceSession(
            encoder_part.SerializeToString(), sess_options=options, providers=providers
        )
        self._decoder = onnxruntime.InferenceSession(
            decoder_part.SerializeToString(), sess_options=options, providers=providers
        )
        self.hop_length = hop_length
        self._capture = threading.local()  # .latents: the list latents() hands out, in its thread

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """What the one-part graph returns: [audio [1, 1, 1, frames * hop], frame counts per id, ...].

        Inside :meth:`latents` the audio is zeros of the right length and the
        latent goes to the caller's list instead.
        """
        latent, *others = self._encoder.run(None, feed)
        captured: list[np.ndarray] | None = getattr(self._capture, "latents", None)
        if captured is not None:
            captured.append(latent)
            audio = np.zeros((1, 1, 1, latent.shape[-1] * self.hop_length), np.float32)
        else:
            audio = self._decoder.run(None, {self.latent_name: latent})[0]
        return [audio, *others]

    @contextmanager
    def latents(self) -> Iterator[list[np.ndarray]]:
        """Within this block :meth:`run` (in this thread) skips the decoder; the latents gather in the list."""
        captured: list[np.ndarray] = []
        self._capture.latents = captured
        try:
            yield captured
        finally:
            self._capture.latents = None

    def decode(self, latent: np.ndarray, start: int, end: int, context: int = CONTEXT_FRAMES) -> np.ndarray:
        """Audio [(end - start) * hop] float32 of latent frames ``[start, end)`` (``latent`` [1, C, frames])."""
        frames = latent.shape[-1]
        if not 0 <= start < end <= frames:
            raise ValueError(f"window [{start}, {end}) outside the latent's {frames} frames")
        lo, hi = max(0, start - context), min(frames, end + context)
        audio = self._decoder.run(None, {self.latent_name: latent[..., lo:hi]})[0].reshape(-1)
        skip = (start - lo) * self.hop_length
        return audio[skip : skip + (end - start) * self.hop_length]


def plan_windows(bounds: Sequence[int], first: int, frames: int) -> list[tuple[int, int]]:
    """Decoder windows ``[start, end)`` over ``frames`` latent frames, cut only at ``bounds``.

    ``bounds`` (ascending frame indices) are where a window may end (phoneme
    boundaries, so each window's alignments are whole phonemes). The first
    window ends at the first bound at or after ``first`` frames; each later one
    at the last bound at most twice the frames already out (so it is decoded
    long before those have played), at least at the next bound. A rest shorter
    than ``first`` joins the window before it.
    """
    cuts = [b for b in bounds if 0 < b < frames]
    windows: list[tuple[int, int]] = []
    start = 0
    while start < frames:
        limit = first if start == 0 else 2 * start
        later = [b for b in cuts if b > start]
        fitting = [b for b in later if b <= start + limit]
        if start == 0:
            end = next((b for b in later if b >= first), frames)
        else:
            end = fitting[-1] if fitting else (later[0] if later else frames)
        if frames - end < first:
            end = frames
        windows.append((start, end))
        start = end
    return windows

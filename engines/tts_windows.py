"""A Piper voice run in parts, so a sentence's audio can be made a window at a time.

A Piper voice is a VITS network. Its text encoder and stochastic duration
predictor turn a sentence's phoneme ids into per-frame prior ``z_p``
[1, C, frames] (one frame per ``hop_length`` samples; the random noise of
``noise_scale`` / ``noise_w`` is drawn here, once per sentence); its flow
turns ``z_p`` into the latent ``z``, and its HiFi-GAN-style decoder turns
``z`` into audio. For a 2.7 s sentence here (joe-medium, one thread):
encoder + durations 26-28 ms, flow 32-35 ms, decoder 153-176 ms of thread CPU.

The flow and the decoder are convolutions along the frames with a short
reach: the flow's output at a frame depends on ``z_p`` within
:data:`FLOW_CONTEXT_FRAMES` of it (max |diff| 1.9e-6 from 32 frames on), the
decoder's on ``z`` within its receptive field, read off its graph
(:func:`decoder_reach`: 12.1 frames at most on joe-medium; 1.1e-6 from 12 on). So a
window of frames ``[s, e)`` can be made from ``z_p`` around it and gives the
samples the whole-sentence run gives: a sentence is decoded window by window
and its first window played while the rest is made, with no join to hear.

:class:`SplitVoiceSession` stands in for the voice's onnxruntime session:
``run()`` does all three parts, returning what the one-part graph returns
(audio, and the per-phoneme-id frame counts the alignments come from), so
Piper's own code phonemises, maps ids and builds alignments as always. Inside
:meth:`SplitVoiceSession.priors` it stops after the first part and hands out
the :class:`Prior` instead, for :meth:`SplitVoiceSession.decode` to turn into
audio window by window.

The parts are cut from the voice's graph in memory when it loads
(:func:`split_voice`); nothing is written or fetched. The decoder part runs its
1-D convolutions as 2-D ones of height 1 (:func:`decoder_as_2d`): onnxruntime's
CPU provider has its blocked (NCHWc) convolution kernels for 2-D only, and the
decoder is ~70 % of a sentence. Same sums in another order: float rounding
(max |diff| 1.2e-6 at a peak of 0.45), 123 -> 107 ms for a 2.75 s sentence.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CONTEXT_FRAMES = 16  # z frames decoded on each side of a window where decoder_reach cannot read the graph
FLOW_CONTEXT_FRAMES = 40  # z_p frames run through the flow on each side of those (exact from 32)
DECODER_PREFIX = "/dec/"  # node names of the decoder in Piper's (VITS) exported graphs
FLOW_PREFIX = "/flow/"  # ... and of the flow
_ELEMENTWISE = frozenset({"Add", "Div", "LeakyRelu", "Mul", "Sub", "Tanh"})  # rank-free with scalar constants


@dataclass(frozen=True)
class VoiceParts:
    """A voice graph in three (onnx ModelProtos) and the tensors between them."""

    prior: Any  # graph inputs -> flow inputs, the graph's other outputs (alignments)
    flow: Any  # flow inputs (z_p and its frame mask) -> z
    decoder: Any  # z -> audio
    flow_inputs: tuple[str, ...]
    z: str


@dataclass(frozen=True)
class Prior:
    """One sentence's flow inputs (``z_p`` [1, C, frames] and its frame mask [1, 1, frames]), frames last."""

    inputs: tuple[np.ndarray, ...]

    @property
    def frames(self) -> int:
        return int(self.inputs[0].shape[-1])

    def window(self, lo: int, hi: int) -> tuple[np.ndarray, ...]:
        return tuple(a[..., lo:hi] for a in self.inputs)


def _outside_inputs(graph: Any, nodes: list[Any]) -> set[str]:
    """Tensors ``nodes`` read that none of them makes (weights and constants left out)."""
    made = {o for n in nodes for o in n.output}
    weights = {i.name for i in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return {
        i for n in nodes for i in n.input if i and i not in made and i not in weights and i not in constants
    }


def split_voice(model: Any) -> VoiceParts:
    """``model`` (an onnx ModelProto with the alignment output) cut before its flow and its decoder.

    The decoder is the ``/dec/`` nodes, reading one tensor ``z``; the flow is
    every node from the ``/flow/`` nodes on that ``z`` depends on, reading
    ``z_p`` and the frame mask. Raises ValueError for a graph where these
    cannot be found (not a VITS export): the caller keeps the whole graph then.
    """
    from onnx.utils import Extractor

    graph = model.graph
    decoder = [n for n in graph.node if n.name.startswith(DECODER_PREFIX)]
    if not decoder:
        raise ValueError(f"no {DECODER_PREFIX} nodes in the voice graph")
    z_in = _outside_inputs(graph, decoder)
    if len(z_in) != 1:
        raise ValueError(f"the decoder takes {sorted(z_in)}, not one latent")
    z = z_in.pop()
    producer = {o: n for n in graph.node for o in n.output}
    feeds_z: list[Any] = []  # the nodes z depends on
    seen: set[str] = set()
    todo = [z]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        feeds_z.append(node)
        todo.extend(node.input)
    after_flow: set[str] = {o for n in graph.node if n.name.startswith(FLOW_PREFIX) for o in n.output}
    for node in graph.node:  # graph order is topological: a node reading a flow tensor is flow
        if any(i in after_flow for i in node.input):
            after_flow.update(node.output)
    flow = [n for n in feeds_z if n.name.startswith(FLOW_PREFIX) or any(o in after_flow for o in n.output)]
    flow_in = sorted(_outside_inputs(graph, flow))
    if len(flow_in) != 2:
        raise ValueError(f"the flow takes {flow_in}, not z_p and a mask")
    audio = graph.output[0].name
    others = [o.name for o in graph.output[1:]]
    if not others:
        raise ValueError("the voice graph has no alignment output")
    extractor = Extractor(model)
    return VoiceParts(
        prior=extractor.extract_model([i.name for i in graph.input], [*flow_in, *others]),
        flow=extractor.extract_model(flow_in, [z]),
        decoder=extractor.extract_model([z], [audio]),
        flow_inputs=tuple(flow_in),
        z=z,
    )


def decoder_reach(decoder: Any) -> float:
    """How many z frames on either side of an output sample ``decoder`` can read at most (an upper bound).

    Walks the graph from z: a ``Conv`` (stride 1) of kernel k, dilation d and
    pads (l, r) at s samples per frame reaches max(l, r, (k-1)d - l, (k-1)d - r) / s
    frames further; a ``ConvTranspose`` of stride t reaches that over t (rounded
    up a sample) and multiplies s by t; any other node reaches as far as its
    furthest input (element-wise: the decoder has nothing else along time).
    Raises ValueError for a strided ``Conv`` or a node that reshapes.
    """
    from onnx import helper

    graph = decoder.graph
    reach: dict[str, tuple[int, float]] = {
        graph.input[0].name: (1, 0.0)
    }  # tensor -> (samples per frame, frames)
    for node in graph.node:
        inputs = [reach[i] for i in node.input if i in reach]
        if not inputs:
            continue
        scale, far = inputs[0][0], max(r for _, r in inputs)
        if any(s != scale for s, _ in inputs):
            raise ValueError(f"{node.name}: inputs at different rates")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose"):
            (kernel,), (dilation,) = attrs["kernel_shape"], attrs.get("dilations", [1])
            (stride,), pads = attrs.get("strides", [1]), attrs.get("pads", [0, 0])
            span = (kernel - 1) * dilation
            samples = max(pads[0], pads[1], span - pads[0], span - pads[1])
            if node.op_type == "Conv":
                if stride != 1:
                    raise ValueError(f"{node.name}: a strided Conv")
                far += samples / scale
            else:
                far += (samples + stride - 1) / stride / scale
                scale *= stride
        elif node.op_type not in _ELEMENTWISE and not (
            node.op_type == "Unsqueeze" and node.output[0] == graph.output[0].name
        ):
            raise ValueError(f"{node.name}: {node.op_type} not handled")
        for out in node.output:
            reach[out] = (scale, far)
    if graph.output[0].name not in reach:
        raise ValueError("the decoder's output does not depend on z")
    return reach[graph.output[0].name][1]


def decoder_as_2d(decoder: Any) -> Any:
    """``decoder`` (z [B, C, frames] -> audio [B, 1, 1, samples]) with its convolutions made 2-D.

    z gets a height axis of 1 ([B, C, 1, frames]); every ``Conv`` and
    ``ConvTranspose`` gets weights [O, I, 1, K] and its attributes along the
    width; the element-wise nodes are rank-free; the final ``Unsqueeze`` (axis
    1, [B, 1, samples] -> [B, 1, 1, samples]) becomes an ``Identity``, the
    tensor being 4-D already. The same products and sums, accumulated in
    another order. Raises ValueError for a node it does not know (the caller
    keeps the 1-D decoder then).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(decoder)
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError("the decoder has not one input and one output")
    z, audio = graph.input[0].name, graph.output[0].name
    axes = "decoder_as_2d/height_axis"
    graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes))
    nodes = [helper.make_node("Unsqueeze", [z, axes], [z + "/2d"], name="decoder_as_2d/Unsqueeze")]
    renamed = {z: z + "/2d"}
    done: set[str] = set()  # weights already reshaped (a weight could be shared)
    for node in graph.node:
        inputs = [renamed.get(i, i) for i in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = weights.get(node.input[1])
            if weight is None or len(weight.dims) != 3:
                raise ValueError(f"{node.name}: weights are not a 3-D initializer")
            if weight.name not in done:
                w = numpy_helper.to_array(weight)  # [O, I, K] (ConvTranspose: [I, O, K])
                weight.CopyFrom(numpy_helper.from_array(w[:, :, None, :], weight.name))
                done.add(weight.name)
            for key in ("kernel_shape", "dilations", "strides", "output_padding"):
                if key in attrs:
                    attrs[key] = [1, *attrs[key]]
            if "pads" in attrs:
                attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
            if "output_shape" in attrs or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise ValueError(f"{node.name}: output_shape / auto_pad not handled")
        elif node.op_type in _ELEMENTWISE:
            for i in node.input:
                if i in weights and len(weights[i].dims) != 0:
                    raise ValueError(f"{node.name}: a non-scalar constant {i} would broadcast differently")
        elif node.op_type == "Unsqueeze" and node.output[0] == audio:
            axis = numpy_helper.to_array(weights[node.input[1]]) if node.input[1] in weights else None
            if axis is None or axis.tolist() != [1]:
                raise ValueError(f"{node.name}: the final Unsqueeze is not along axis 1")
            nodes.append(helper.make_node("Identity", inputs[:1], list(node.output), name=node.name))
            continue
        else:
            raise ValueError(f"{node.name}: {node.op_type} not handled")
        nodes.append(helper.make_node(node.op_type, inputs, list(node.output), name=node.name, **attrs))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # 3-D shapes inferred by the exporter
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model


class SplitVoiceSession:
    """A Piper voice's onnxruntime session as three: phoneme ids → ``z_p``, → ``z`` (flow), → audio.

    ``decoder_2d`` runs the decoder as :func:`decoder_as_2d` makes it (False:
    as exported, bit for bit Piper's one-part graph).
    """

    def __init__(self, model: Any, hop_length: int, options: Any = None, decoder_2d: bool = True) -> None:
        import onnxruntime

        parts = split_voice(model)
        self._names = parts
        try:
            self.context_frames = math.ceil(
                decoder_reach(parts.decoder)
            )  # z frames a window needs on each side
        except ValueError as exc:
            logger.info(
                "SplitVoiceSession: decoder's reach unknown (%s); %d frames of context", exc, CONTEXT_FRAMES
            )
            self.context_frames = CONTEXT_FRAMES
        decoder = parts.decoder
        if decoder_2d:
            try:
                decoder = decoder_as_2d(parts.decoder)
            except ValueError as exc:
                logger.info("SplitVoiceSession: decoder kept 1-D (%s)", exc)

        def session(part: Any) -> Any:
            return onnxruntime.InferenceSession(
                part.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
            )

        self._prior, self._flow, self._decoder = (
            session(parts.prior),
            session(parts.flow),
            session(decoder),
        )
        self.hop_length = hop_length
        self._capture = threading.local()  # .priors: the list priors() hands out, in its thread

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """What the one-part graph returns: [audio [1, 1, 1, frames * hop], frame counts per id, ...].

        Inside :meth:`priors` the audio is zeros of the right length and the
        sentence's :class:`Prior` goes to the caller's list instead.
        """
        outputs = self._prior.run(None, feed)
        count = len(self._names.flow_inputs)
        prior, others = Prior(tuple(outputs[:count])), outputs[count:]
        captured: list[Prior] | None = getattr(self._capture, "priors", None)
        if captured is not None:
            captured.append(prior)
            return [np.zeros((1, 1, 1, prior.frames * self.hop_length), np.float32), *others]
        return [self._audio(prior), *others]

    @contextmanager
    def priors(self) -> Iterator[list[Prior]]:
        """Within this block :meth:`run` (in this thread) stops before the flow; the priors gather in the list."""
        captured: list[Prior] = []
        self._capture.priors = captured
        try:
            yield captured
        finally:
            self._capture.priors = None

    def _audio(self, prior: Prior) -> np.ndarray:
        """The decoder's output [1, 1, 1, frames * hop] for the whole sentence."""
        names = self._names
        z = self._flow.run(None, dict(zip(names.flow_inputs, prior.inputs, strict=True)))[0]
        result: np.ndarray = self._decoder.run(None, {names.z: z})[0]
        return result

    def flow(self, prior: Prior, lo: int, hi: int) -> np.ndarray:
        """z [1, C, hi - lo] of frames ``[lo, hi)``, as the whole sentence's flow gives them."""
        flo, fhi = max(0, lo - FLOW_CONTEXT_FRAMES), min(prior.frames, hi + FLOW_CONTEXT_FRAMES)
        names = self._names
        z = self._flow.run(None, dict(zip(names.flow_inputs, prior.window(flo, fhi), strict=True)))[0]
        return np.asarray(z[..., lo - flo : hi - flo])

    def decode_z(self, z: np.ndarray) -> np.ndarray:
        """The decoder's output [frames * hop] float32 for ``z`` [1, C, frames]."""
        return np.asarray(self._decoder.run(None, {self._names.z: z})[0]).reshape(-1)

    def decode(self, prior: Prior, start: int, end: int) -> np.ndarray:
        """Audio [(end - start) * hop] float32 of frames ``[start, end)`` of a sentence (one-off: see :class:`WindowDecoder`)."""
        return WindowDecoder(self, prior).decode(start, end)


class WindowDecoder:
    """One sentence's audio, a window of frames at a time, each as the whole sentence's run gives it.

    The decoder runs on each window plus the session's ``context_frames`` on either
    side. The flow runs twice: up to the first window's reach (that is the
    first audio's wait), then over the rest of the sentence at the second
    window, so it adds only 2 × :data:`FLOW_CONTEXT_FRAMES` frames of work.
    """

    def __init__(self, session: SplitVoiceSession, prior: Prior) -> None:
        self._session = session
        self._prior = prior
        self._z: np.ndarray | None = None  # [1, C, n]: z of the sentence's first n frames

    def decode(self, start: int, end: int) -> np.ndarray:
        frames = self._prior.frames
        if not 0 <= start < end <= frames:
            raise ValueError(f"window [{start}, {end}) outside the sentence's {frames} frames")
        context = self._session.context_frames
        lo, hi = max(0, start - context), min(frames, end + context)
        have = 0 if self._z is None else self._z.shape[-1]
        if have < hi:
            upto = hi if self._z is None else frames  # the first window's reach, then everything
            more = self._session.flow(self._prior, have, upto)
            self._z = more if self._z is None else np.concatenate([self._z, more], axis=-1)
        assert self._z is not None
        audio = self._session.decode_z(self._z[..., lo:hi])
        skip = (start - lo) * self._session.hop_length
        return audio[skip : skip + (end - start) * self._session.hop_length]


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

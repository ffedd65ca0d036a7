"""a2v inference behind one interface: onnxruntime CPU (default), onnxruntime CUDA, TensorRT.

::

    a2v = load_a2v("onnx-cpu")             # or "onnx-cuda", "tensorrt", "auto"
    frames = a2v.infer(pcm, 48_000)        # [T, C] float32, T = ceil(duration × fps)
    s = a2v.stream(48_000)
    parts = [s.push(chunk) for chunk in chunks] + [s.flush()]   # concatenated == frames

Frames follow the media clock: frame ``k`` covers ``[k/fps, (k+1)/fps)`` of the
audio; its channels are :data:`engines.a2v.visemes.A2V_CHANNELS` (15 viseme
probabilities, ARKit mouth/jaw channels, speech activity). A frame is
returned once the audio up to ``lookahead_ms`` past its end has been pushed.

No torch here: features are numpy (:mod:`engines.a2v.features`), the network
runs from the ONNX file (``engines/data/a2v.onnx`` by default) or from a
TensorRT engine built by ``splatcast export tensorrt``. Asking for TensorRT
falls back to onnxruntime CUDA and then CPU when it is not usable, with a log
line saying which runtime ran (``strict=True`` raises instead).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np

from engines.a2v.features import HOP, LOG_FLOOR, N_MELS, LogMelStream, Resampler
from engines.a2v.visemes import A2V_CHANNELS

logger = logging.getLogger(__name__)

A2VRuntime = Literal["onnx-cpu", "onnx-cuda", "tensorrt"]
A2VRuntimeChoice = Literal[A2VRuntime, "auto"]  # "auto": the fastest that works (settings, CLI, services)
RUNTIMES: tuple[A2VRuntime, ...] = get_args(A2VRuntime)
RUNTIME_CHOICES: tuple[A2VRuntimeChoice, ...] = get_args(A2VRuntimeChoice)
STEP_RATE = 50  # network steps per second


class A2VError(RuntimeError):
    """The a2v runtime cannot run as asked (missing weights, package or GPU)."""


class Backend(Protocol):
    """Runs the streaming graph: ``feats [B, T, n_in]``, ``state [B, len, ch]`` → ``(out [B, T, C], new_state)``."""

    name: str

    def run(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class OrtBackend:
    """onnxruntime on CPU or CUDA."""

    def __init__(self, weights: Path, cuda: bool = False, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise A2VError(
                    "onnxruntime has no CUDA provider here; install onnxruntime-gpu on a machine with a GPU "
                    "(pip install 'splatcast[gpu]')"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(weights), sess_options=opts, providers=providers)
        if cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            raise A2VError("onnxruntime could not start its CUDA provider (no GPU or CUDA libraries missing)")
        self.name = "onnx-cuda" if cuda else "onnx-cpu"
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, new_state = self.session.run(None, {"feats": feats, "state": state})
        return out, new_state


def onnx_metadata(weights: Path) -> dict[str, str]:
    """The a2v facts stored in an ONNX file's metadata (channels, lookahead, state shape, ...)."""
    import onnx

    model = onnx.load(str(weights), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


class A2VStream:
    """One audio stream: ``push(pcm)`` returns the frames completed so far, ``flush()`` the rest.

    Feed PCM at the ``sample_rate`` given to :meth:`A2V.stream`. After
    :meth:`flush` the stream is finished; call :meth:`reset` to reuse it.
    """

    def __init__(self, a2v: A2V, sample_rate: int) -> None:
        self._a2v = a2v
        self.sample_rate = sample_rate
        self.reset()

    def reset(self) -> None:
        a = self._a2v
        self._resampler = Resampler(self.sample_rate)
        self._mel = LogMelStream()
        self._pending = np.zeros((0, N_MELS), np.float32)  # odd mel frame waiting for its pair
        self.state = a.zero_state(1)
        self._net_steps = 0  # network steps run so far
        self._outs = np.zeros((0, len(a.channels)), np.float32)  # label-step outputs not yet pooled
        self._out_base = 0  # label-step index of _outs[0]
        self._frames = 0  # frames returned so far
        self._n_in = 0  # input samples at sample_rate
        self._n16 = 0  # 16 kHz samples given to the features
        self._finished = False

    @property
    def frames_emitted(self) -> int:
        return self._frames

    # --- the three stages (split so that A2V.push_batch can batch the network across streams) ---

    def _steps_from_16k(self, pcm16: np.ndarray) -> np.ndarray:
        self._n16 += len(pcm16)
        mel = np.concatenate([self._pending, self._mel.push(pcm16)])
        k = len(mel) // 2
        self._pending = mel[2 * k :]
        return mel[: 2 * k].reshape(k, 2 * N_MELS)

    def _prepare_push(self, pcm: np.ndarray) -> np.ndarray:
        if self._finished:
            raise A2VError("this stream was flushed; call reset() (or open a new stream) to start again")
        pcm = _check_pcm(pcm)
        self._n_in += len(pcm)
        return self._steps_from_16k(self._resampler.push(pcm))

    def _total_frames(self) -> int:
        return -(-self._n_in * self._a2v.fps // self.sample_rate)

    def _prepare_flush(self) -> np.ndarray:
        if self._finished:
            raise A2VError("this stream was already flushed")
        self._finished = True
        tail = self._resampler.flush()
        # pad with silence until every frame covering the audio has its steps + lookahead
        step_end = -(-self._total_frames() * STEP_RATE // self._a2v.fps)
        need16 = (step_end + self._a2v.delay) * 2 * HOP
        pad = max(0, need16 - self._n16 - len(tail))
        return self._steps_from_16k(np.concatenate([tail, np.zeros(pad, np.float32)]))

    def _accept(self, out: np.ndarray) -> np.ndarray:
        """Network outputs for the next ``len(out)`` steps → the frames now complete."""
        skip = max(0, self._a2v.delay - self._net_steps)  # the first `delay` outputs predict t < 0
        self._net_steps += len(out)
        if skip < len(out):
            self._outs = np.concatenate([self._outs, out[skip:]])
        return self._emit()

    def _emit(self) -> np.ndarray:
        fps = self._a2v.fps
        limit = self._total_frames() if self._finished else None
        available = self._out_base + len(self._outs)
        frames = []
        while limit is None or self._frames < limit:
            j0 = -(-self._frames * STEP_RATE // fps)
            j1 = -(-(self._frames + 1) * STEP_RATE // fps)
            if j1 > available:
                break
            frames.append(self._outs[j0 - self._out_base : j1 - self._out_base].mean(axis=0))
            self._frames += 1
        next_j0 = -(-self._frames * STEP_RATE // fps)
        drop = max(0, next_j0 - self._out_base)
        self._outs = self._outs[drop:]
        self._out_base += drop
        if not frames:
            return np.zeros((0, len(self._a2v.channels)), np.float32)
        return np.stack(frames).astype(np.float32)

    # --- public ---

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Add audio (float32 ``[N]`` in [-1, 1]); return the frames completed: ``[k, C]`` float32."""
        steps = self._prepare_push(pcm)
        return self._accept(self._a2v._run_one(self, steps))

    def flush(self) -> np.ndarray:
        """End of audio: return the remaining frames (the last one may cover a partial interval)."""
        steps = self._prepare_flush()
        return self._accept(self._a2v._run_one(self, steps))


def _check_pcm(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim != 1:
        raise A2VError(f"a2v expects mono PCM of shape [N], got {pcm.shape}")
    if not np.issubdtype(pcm.dtype, np.floating):
        raise A2VError(f"a2v expects float PCM in [-1, 1], got {pcm.dtype} (int16: divide by 32768)")
    return pcm.astype(np.float32, copy=False)


class A2V:
    """A loaded a2v network with its runtime; see the module docstring."""

    def __init__(self, backend: Backend, metadata: dict[str, str], fps: int = 25) -> None:
        if fps not in (25, 30) and not (1 <= fps <= STEP_RATE):
            raise A2VError(f"fps must be between 1 and {STEP_RATE} (25 default, 30 supported), got {fps}")
        self.backend = backend
        self.fps = fps
        try:
            self.channels: tuple[str, ...] = tuple(json.loads(metadata["channels"]))
            self.delay = int(metadata["delay_steps"])
            self.state_channels = int(metadata["state_channels"])
            self.state_len = int(metadata["state_len"])
            self.n_in = int(metadata["n_in"])
        except (KeyError, ValueError) as exc:
            raise A2VError(
                f"a2v weights lack metadata ({exc}); re-export with: splatcast export onnx"
            ) from exc
        if self.channels != A2V_CHANNELS:
            raise A2VError("a2v weights were trained for other channels; retrain with: splatcast a2v train")
        self.metadata = metadata

    def zero_state(self, batch: int) -> np.ndarray:
        """Network state of ``batch`` streams that heard only silence: ``[batch, state_len, channels]``."""
        return np.zeros((batch, self.state_len, self.state_channels), np.float32)

    @property
    def runtime(self) -> str:
        return self.backend.name

    @property
    def lookahead_ms(self) -> float:
        """Audio needed past the end of a frame before it is final (worst case over frames)."""
        step_ms = 1000 / STEP_RATE
        frame_ms = 1000 / self.fps
        overhang = max(
            (-(-(k + 1) * STEP_RATE // self.fps)) * step_ms - (k + 1) * frame_ms for k in range(self.fps)
        )
        return float(self.delay * step_ms + overhang)

    def stream(self, sample_rate: int) -> A2VStream:
        return A2VStream(self, sample_rate)

    def infer(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """Whole utterance → ``[ceil(N × fps / sample_rate), C]`` float32 (equals streaming it)."""
        s = self.stream(sample_rate)
        steps = np.concatenate([s._prepare_push(pcm), s._prepare_flush()])
        return s._accept(self._run_one(s, steps))

    def infer_batch(self, pcms: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Several utterances in one network call per chunk of time (each result equals :meth:`infer`)."""
        streams = [self.stream(sample_rate) for _ in pcms]
        steps = [
            np.concatenate([s._prepare_push(p), s._prepare_flush()])
            for s, p in zip(streams, pcms, strict=True)
        ]
        if not steps:
            return []
        t_max = max(len(x) for x in steps)
        silence = np.float32(np.log(LOG_FLOOR))
        feats = np.full((len(steps), t_max, self.n_in), silence, np.float32)
        for i, x in enumerate(steps):
            feats[i, : len(x)] = x  # the network is causal: padding at the end changes nothing before it
        state = self.zero_state(len(steps))
        out, _ = self._run(feats, state)
        return [s._accept(out[i, : len(x)]) for i, (s, x) in enumerate(zip(streams, steps, strict=True))]

    def push_batch(self, streams: Sequence[A2VStream], pcms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One chunk for each of several streams (e.g. one per session), batched in the network."""
        steps = [s._prepare_push(p) for s, p in zip(streams, pcms, strict=True)]
        outs: list[np.ndarray | None] = [None] * len(streams)
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(steps):
            by_len.setdefault(len(x), []).append(i)
        for t, idx in by_len.items():
            if t == 0:
                for i in idx:
                    outs[i] = steps[i]
                continue
            feats = np.stack([steps[i] for i in idx])
            state = np.concatenate([streams[i].state for i in idx])
            out, new_state = self._run(feats, state)
            for row, i in enumerate(idx):
                streams[i].state = new_state[row : row + 1]
                outs[i] = out[row]
        return [
            s._accept(o if o is not None and len(o) else _empty(self))
            for s, o in zip(streams, outs, strict=True)
        ]

    def _run_one(self, stream: A2VStream, steps: np.ndarray) -> np.ndarray:
        if len(steps) == 0:
            return _empty(self)
        out, stream.state = self._run(steps[None], stream.state)
        return out[0]

    def _run(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, new_state = self.backend.run(
            np.ascontiguousarray(feats, np.float32), np.ascontiguousarray(state)
        )
        return np.asarray(out, np.float32), np.asarray(new_state, np.float32)


def _empty(a2v: A2V) -> np.ndarray:
    return np.zeros((0, len(a2v.channels)), np.float32)


def _default_weights() -> Path:
    from engines.assets import AssetMissingError, a2v_weights

    try:
        return a2v_weights()
    except AssetMissingError as exc:
        raise A2VError(str(exc)) from exc


def load_a2v(
    runtime: A2VRuntimeChoice = "onnx-cpu",
    weights: Path | None = None,
    fps: int = 25,
    engine: Path | None = None,
    threads: int = 1,
    strict: bool = False,
) -> A2V:
    """Load a2v on ``runtime``; TensorRT → onnxruntime CUDA → onnxruntime CPU fallback unless ``strict``.

    ``runtime="auto"`` means: the fastest that works (TensorRT first).
    ``engine`` is the TensorRT plan (default: :func:`engines.a2v.tensorrt_runtime.default_engine_path`).
    """
    if runtime not in RUNTIME_CHOICES:
        raise A2VError(f"unknown a2v runtime {runtime!r}; choose one of {', '.join(RUNTIMES)} or auto")
    weights = Path(weights) if weights is not None else _default_weights()
    if not weights.exists():
        raise A2VError(f"a2v weights {weights} not found; train them with: splatcast a2v train")
    chain = {
        "tensorrt": ["tensorrt", "onnx-cuda", "onnx-cpu"],
        "auto": ["tensorrt", "onnx-cuda", "onnx-cpu"],
        "onnx-cuda": ["onnx-cuda", "onnx-cpu"],
        "onnx-cpu": ["onnx-cpu"],
    }[runtime]
    if strict:
        chain = chain[:1]
    metadata = onnx_metadata(weights)
    errors: list[str] = []
    for name in chain:
        try:
            backend: Backend
            if name == "tensorrt":
                from engines.a2v.tensorrt_runtime import TensorRTBackend

                backend = TensorRTBackend(weights, engine)
            else:
                backend = OrtBackend(weights, cuda=(name == "onnx-cuda"), threads=threads)
        except (A2VError, ImportError, OSError, RuntimeError) as exc:
            errors.append(f"{name}: {exc}")
            if strict:
                raise A2VError(f"a2v runtime {name} is not usable: {exc}") from exc
            logger.warning("a2v: %s not usable (%s); falling back", name, exc)
            continue
        a2v = A2V(backend, metadata, fps=fps)
        logger.info(
            "a2v: running on %s (asked for %s), %s, %d fps, lookahead %.0f ms",
            name,
            runtime,
            weights.name,
            fps,
            a2v.lookahead_ms,
        )
        return a2v
    raise A2VError("no a2v runtime could start: " + "; ".join(errors))

"""Silero VAD and Smart Turn v3, loaded once per process and shared by every conversation pipeline.

Pipecat's ``SileroVADAnalyzer`` and ``LocalSmartTurnAnalyzerV3`` each build
their own onnxruntime session in ``__init__``. A server builds one pipeline per
session on the event loop, so every join blocked the loop (and the frames of
every other session) for the two model loads: ~130 ms here with three sessions
streaming. An onnxruntime session holds no per-stream state (Silero's
recurrent state and context are inputs and outputs, kept on the model
wrapper; Smart Turn is stateless), and ``run`` may be called from several
threads at once, so one session per model serves every pipeline. The
analyzers below are Pipecat's own classes with only the model load replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

from realtime.conversation.pause import PauseListener, PauseSileroVAD


def _options(optimize: bool) -> Any:
    """One intra-op thread, no inter-op parallelism, no spin-waiting (as Pipecat, without the spin)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def silero_vad_path() -> str:
    """The Silero VAD ONNX file inside pipecat-ai."""
    from importlib import resources

    return str(resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx"))


@dataclass(frozen=True)
class TurnModels:
    """The two turn-taking models' onnxruntime sessions (read-only; safe to share between threads)."""

    vad: Any  # onnxruntime.InferenceSession of Silero VAD
    smart_turn: Any  # onnxruntime.InferenceSession of Smart Turn v3

    @classmethod
    def load(cls) -> TurnModels:
        """Both models from the files shipped in pipecat-ai (offline, ~100-150 ms of CPU)."""
        import onnxruntime as ort

        from engines.assets import smart_turn

        cpu = ["CPUExecutionProvider"]
        return cls(
            vad=ort.InferenceSession(silero_vad_path(), sess_options=_options(False), providers=cpu),
            smart_turn=ort.InferenceSession(str(smart_turn()), sess_options=_options(True), providers=cpu),
        )

    def vad_analyzer(
        self, sample_rate: int, params: VADParams | None = None, listener: PauseListener | None = None
    ) -> PauseSileroVAD:
        """A new Silero VAD analyzer (its own recurrent state) on the shared session; ``listener``
        hears the user's pauses (:mod:`realtime.conversation.pause`)."""
        return _SharedSileroVAD(self.vad, sample_rate=sample_rate, params=params, listener=listener)

    def turn_analyzer(self) -> LocalSmartTurnAnalyzerV3:
        """A new Smart Turn v3 analyzer (its own audio buffer) on the shared session."""
        return _SharedSmartTurn(self.smart_turn)


class _SharedSileroVAD(PauseSileroVAD):
    def __init__(
        self,
        session: Any,
        *,
        sample_rate: int | None = None,
        params: VADParams | None = None,
        listener: PauseListener | None = None,
    ) -> None:
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)  # skips the parent's model load
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = session
        model.reset_states()
        model.sample_rates = [8000, 16000]
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self.listen_for_pauses(listener)


class _SharedSmartTurn(LocalSmartTurnAnalyzerV3):
    """Pipecat's analyzer on the shared session. Its decision runs at its executor thread's own priority:
    raised to the foreground one, its ~110 ms held the core Whisper left to a call's renders (see
    :func:`realtime.conversation.services._transcribe_first`); it ends well before Whisper anyway."""

    def __init__(self, session: Any) -> None:
        BaseSmartTurn.__init__(self)  # skips the parent's model load
        self._log_data = False
        self._session = session

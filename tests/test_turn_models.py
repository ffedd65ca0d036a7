"""Silero VAD and Smart Turn on one process-wide onnxruntime session each (realtime.conversation.turn_models).

Every pipeline's analyzers must answer exactly as Pipecat's own analyzers (which
load their own copy of the model), and two pipelines sharing the sessions must not
disturb each other's recurrent state.
"""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer

from engines.assets import smart_turn
from engines.tts import PiperTTS
from realtime.conversation.pipeline import make_turn_aggregators
from realtime.conversation.turn_models import TurnModels

RATE = 16000
WINDOW = 512  # Silero's window at 16 kHz


@pytest.fixture(scope="module")
def turn() -> TurnModels:
    return TurnModels.load()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A spoken sentence at 16 kHz with a second of silence after it, int16."""
    import soxr

    chunk = next(iter(PiperTTS.load(threads=1).synthesize("Turn taking needs both models to agree.")))
    pcm = soxr.resample(chunk.pcm, chunk.sample_rate, RATE)
    pcm = np.concatenate([np.zeros(RATE // 2, np.float32), pcm, np.zeros(RATE, np.float32)])
    return (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)


def _confidences(vad: SileroVADAnalyzer, pcm: np.ndarray) -> list[float]:
    vad.set_sample_rate(RATE)
    n = len(pcm) // WINDOW
    return [_score(vad, pcm[i * WINDOW : (i + 1) * WINDOW]) for i in range(n)]


def _score(vad: SileroVADAnalyzer, window: np.ndarray) -> float:
    return float(np.asarray(vad.voice_confidence(window.tobytes())).reshape(-1)[0])


def test_shared_vad_scores_as_pipecats_own(turn: TurnModels, speech: np.ndarray) -> None:
    ours = _confidences(turn.vad_analyzer(RATE), speech)
    theirs = _confidences(SileroVADAnalyzer(sample_rate=RATE), speech)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert max(ours) > 0.8  # it hears the sentence
    assert max(ours[: RATE // 2 // WINDOW]) < 0.2  # and not the silence before it


def test_two_vads_on_one_session_keep_their_own_state(turn: TurnModels, speech: np.ndarray) -> None:
    a, b = turn.vad_analyzer(RATE), turn.vad_analyzer(RATE)
    assert a._model.session is b._model.session is turn.vad
    alone = _confidences(turn.vad_analyzer(RATE), speech)
    silence = np.zeros_like(speech)
    a.set_sample_rate(RATE)
    b.set_sample_rate(RATE)
    got = []
    for i in range(len(speech) // WINDOW):  # b hears silence between every window a hears
        got.append(_score(a, speech[i * WINDOW : (i + 1) * WINDOW]))
        _score(b, silence[i * WINDOW : (i + 1) * WINDOW])
    np.testing.assert_allclose(got, alone, atol=1e-5)


def test_shared_smart_turn_predicts_as_pipecats_own(turn: TurnModels, speech: np.ndarray) -> None:
    audio = speech.astype(np.float32) / 32768.0
    theirs = LocalSmartTurnAnalyzerV3(smart_turn_model_path=str(smart_turn()), cpu_count=1)
    ours = turn.turn_analyzer()
    for cut in (len(audio) // 3, len(audio)):  # mid-sentence and after it
        a, b = ours._predict_endpoint(audio[:cut]), theirs._predict_endpoint(audio[:cut])
        assert a["prediction"] == b["prediction"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_pipelines_share_the_process_models(turn: TurnModels) -> None:
    pairs = [make_turn_aggregators(turn) for _ in range(2)]
    vads = [p.user()._params.vad_analyzer for p in pairs]
    assert vads[0] is not vads[1]
    assert vads[0]._model.session is vads[1]._model.session is turn.vad

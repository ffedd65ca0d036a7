"""Piper decoded window by window (engines/tts_windows.py, PiperTTS.stream's first piece)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engines.tts import FIRST_WINDOW_S, PiperTTS, SpeechChunk, SynthesisOptions, decode_windows
from engines.tts_windows import (
    Prior,
    SplitVoiceSession,
    WindowDecoder,
    decoder_as_2d,
    decoder_reach,
    plan_windows,
    split_voice,
)

QUIET = SynthesisOptions(noise_scale=0.0, noise_w_scale=0.0)  # no noise: the same prior every run


def _contiguous(windows: list[tuple[int, int]], frames: int) -> bool:
    return (
        windows[0][0] == 0
        and windows[-1][1] == frames
        and all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    )


def test_windows_end_at_bounds_start_short_and_grow_at_most_twice() -> None:
    bounds = list(range(0, 200, 7))
    windows = plan_windows(bounds, first=30, frames=200)
    assert _contiguous(windows, 200)
    assert windows[0] == (0, 35)  # the first bound at or after 30 frames
    for start, end in windows[1:]:
        assert end in bounds or end == 200
        assert end - start <= 2 * start or end == 200
    assert len(windows) >= 3


def test_a_short_rest_joins_the_window_before_and_no_bounds_is_one_window() -> None:
    assert plan_windows([10, 40, 45], first=30, frames=50) == [(0, 50)]
    assert plan_windows([], first=30, frames=120) == [(0, 120)]
    assert plan_windows([35, 100], first=30, frames=120) == [(0, 35), (35, 120)]


def test_a_graph_without_a_decoder_does_not_split() -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"], name="/enc/Identity")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ValueError, match="no /dec/ nodes"):
        split_voice(helper.make_model(graph))
    assert onnx.checker.check_model(helper.make_model(graph)) is None


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS.load(threads=1)


def _session(tts: PiperTTS) -> SplitVoiceSession:
    session = tts._voice.session
    assert isinstance(session, SplitVoiceSession)  # the bundled voice splits at its decoder
    return session


def _prior(
    tts: PiperTTS, text: str, options: SynthesisOptions | None = None
) -> tuple[SpeechChunk, np.ndarray]:
    with _session(tts).priors() as priors:
        (sentence,) = tts.synthesize(text, options)
    return sentence, priors[0]


def test_windowed_decode_gives_the_whole_decode_samples(tts: PiperTTS) -> None:
    session = _session(tts)
    _, prior = _prior(tts, "Please tell me what the weather will be like tomorrow.")  # with noise
    frames = prior.frames
    whole = session.decode(prior, 0, frames)
    assert len(whole) == frames * session.hop_length
    decoder = WindowDecoder(session, prior)
    parts = [decoder.decode(s, e) for s, e in plan_windows(list(range(0, frames, 5)), 20, frames)]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-4)
    with pytest.raises(ValueError):
        session.decode(prior, 5, frames + 1)


def test_windowed_sentence_equals_pipers_one_shot_when_its_first_window_is_loudest(tts: PiperTTS) -> None:
    text = "I would like to book a table for two people."
    one_shot = next(iter(tts.synthesize(text, QUIET)))  # Piper's own path: all three parts, normalised
    sentence, prior = _prior(tts, text, QUIET)
    assert not sentence.pcm.any()  # inside priors() the flow and decoder did not run
    first = round(FIRST_WINDOW_S * tts.sample_rate / _session(tts).hop_length)
    chunks = list(decode_windows(_session(tts), sentence, prior, first))
    assert len(chunks) >= 2
    for c in chunks:
        assert sum(a.num_samples for a in c.alignments) == len(c.pcm)
    assert sum((c.alignments for c in chunks), ()) == one_shot.alignments
    np.testing.assert_allclose(np.concatenate([c.pcm for c in chunks]), one_shot.pcm, atol=1e-4)


def test_a_louder_later_window_glides_the_gain_down_and_nothing_clips(tts: PiperTTS) -> None:
    session = _session(tts)
    sentence, prior = _prior(tts, "Sure, I can help with that.", QUIET)
    raw = session.decode(prior, 0, prior.frames)
    first = 12  # a short first window, so that a later one is louder
    chunks = list(decode_windows(session, sentence, prior, first))
    pcm = np.concatenate([c.pcm for c in chunks])
    assert np.abs(pcm).max() <= 1.0
    voiced = np.abs(raw) > 1e-2
    gain = pcm[voiced] / raw[voiced]  # the gain each voiced sample got
    assert np.all(np.diff(gain) <= 1e-3 * gain[1:])  # it never rises (beyond the windows' 1e-6 decode noise)
    assert gain[0] > gain[-1]  # it fell: the first window was quieter than the sentence's peak
    np.testing.assert_allclose(gain[-1], 1.0 / np.abs(raw).max(), rtol=1e-4)  # Piper's gain from the peak on


def test_stream_hands_out_the_first_window_before_decoding_the_rest(tts: PiperTTS) -> None:
    session = _session(tts)
    calls: list[str] = []
    flow, decode_z = session.flow, session.decode_z

    def counting_flow(prior: Prior, lo: int, hi: int) -> np.ndarray:
        calls.append("flow")
        return flow(prior, lo, hi)

    def counting_decoder(z: np.ndarray) -> np.ndarray:
        calls.append("decoder")
        return decode_z(z)

    session.flow, session.decode_z = counting_flow, counting_decoder  # type: ignore[method-assign]
    try:
        chunks = tts.stream("Please tell me what the weather will be like tomorrow.", QUIET)
        first = next(chunks)
        assert calls == ["flow", "decoder"]
        assert first.duration_s < 2 * FIRST_WINDOW_S
        rest = list(chunks)
        # the flow runs once more, over the rest of the sentence; the decoder once per window
        assert len(rest) >= 1 and calls == ["flow", "decoder", "flow"] + ["decoder"] * len(rest)
        # a later sentence of the reply (no first-piece limit) is synthesised whole, as before
        calls.clear()
        later = list(
            tts.stream("Please tell me what the weather will be like tomorrow.", QUIET, first_max_words=None)
        )
    finally:
        del session.flow, session.decode_z
    assert len(later) == 1 and calls == []


def _one_d_voice(tts: PiperTTS) -> object:
    """The bundled voice as a split session whose decoder runs as exported (1-D convolutions)."""
    import onnx
    from piper import PiperVoice
    from piper.patch_voice_with_alignment import add_alignment_output

    from engines.assets import piper_voice

    graph = onnx.load(str(piper_voice()[0]))
    add_alignment_output(graph)
    session = SplitVoiceSession(graph, tts._voice.config.hop_length, decoder_2d=False)
    return PiperVoice(session=session, config=tts._voice.config)


def test_the_split_session_synthesises_what_pipers_one_part_graph_does(tts: PiperTTS) -> None:
    from piper import PiperVoice, SynthesisConfig

    from engines.assets import piper_voice

    model, config = piper_voice()
    whole = PiperVoice.load(str(model), config_path=str(config), include_alignments=True)  # Piper's own load
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    text = "Please tell me what the weather will be like tomorrow."
    a = next(iter(whole.synthesize(text, quiet, include_alignments=True)))
    b = next(iter(_one_d_voice(tts).synthesize(text, quiet, include_alignments=True)))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a.audio_float_array, b.audio_float_array)  # 1-D decoder: bit for bit
    assert a.phoneme_alignments == b.phoneme_alignments
    # the 2-D decoder (the default): the same sums in another order, so float rounding only
    c = next(iter(tts._voice.synthesize(text, quiet, include_alignments=True)))
    assert c.phoneme_alignments == a.phoneme_alignments
    diff = np.abs(c.audio_float_array.astype(np.float32) - a.audio_float_array.astype(np.float32))
    assert 0 < np.max(diff) < 1e-5  # measured 1.2e-6 raw (peak 0.45); Piper's normalisation scales it ~2x
    assert np.max(np.abs(a.audio_float_array)) > 0.5


def test_the_2d_decoder_gives_the_exported_decoders_samples(tts: PiperTTS) -> None:
    import onnxruntime

    session = _session(tts)
    _, prior = _prior(tts, "Can you explain how the avatar moves its lips?")  # with noise
    z = session.flow(prior, 0, prior.frames)
    exported = onnxruntime.InferenceSession(
        session._names.decoder.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    one_d = np.asarray(exported.run(None, {session._names.z: z})[0]).reshape(-1)
    two_d = session.decode_z(z)
    assert two_d.shape == one_d.shape and np.max(np.abs(one_d)) > 0.3
    np.testing.assert_allclose(two_d, one_d, rtol=0, atol=1e-5)  # float rounding (1.2e-6 measured)


def test_a_decoder_node_it_does_not_know_keeps_the_decoder_1d() -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["z"], ["y"], name="/dec/Softmax")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3])],
    )
    with pytest.raises(ValueError, match="Softmax not handled"):
        decoder_as_2d(helper.make_model(graph))


def test_the_decoders_reach_is_read_off_its_convolutions() -> None:
    from onnx import TensorProto, helper, numpy_helper

    weights = [
        numpy_helper.from_array(np.zeros((2, 2, 3), np.float32), "w0"),
        numpy_helper.from_array(np.zeros((2, 2, 4), np.float32), "w1"),
        numpy_helper.from_array(np.zeros((2, 2, 3), np.float32), "w2"),
    ]
    nodes = [
        # 2 samples either side at 1 sample per frame: 2 frames
        helper.make_node("Conv", ["z", "w0"], ["a"], kernel_shape=[3], dilations=[2], pads=[2, 2]),
        helper.make_node("LeakyRelu", ["a"], ["b"]),
        # stride 2, kernel 4, pads 1: 2 samples, rounded up a sample, over 2: 1.5 frames; then 2 samples per frame
        helper.make_node("ConvTranspose", ["b", "w1"], ["c"], kernel_shape=[4], strides=[2], pads=[1, 1]),
        # 1 sample at 2 samples per frame: 0.5 frames
        helper.make_node("Conv", ["c", "w2"], ["d"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Add", ["c", "d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 10])],
        initializer=weights,
    )
    assert decoder_reach(helper.make_model(graph)) == 4.0


def test_the_bundled_voices_windows_take_the_decoders_reach_as_context(tts: PiperTTS) -> None:
    session = _session(tts)
    assert session.context_frames == 13  # reach 12.08 frames (measured: exact from 12 frames of context on)
    _, prior = _prior(tts, "I would like to book a table for two people.")  # with noise
    whole = session.decode(prior, 0, prior.frames)
    windows = [(0, 30), (30, 31), (31, 90), (90, prior.frames)]
    parts = [WindowDecoder(session, prior).decode(s, e) for s, e in windows]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-5)
    session.context_frames = 6  # inside the reach: the window's edges show
    try:
        short = WindowDecoder(session, prior).decode(30, 90)
    finally:
        session.context_frames = 13
    assert np.max(np.abs(short - whole[30 * session.hop_length : 90 * session.hop_length])) > 1e-4

"""Piper with alignments (engines/tts.py) feeding the alignment path."""

from __future__ import annotations

import numpy as np
import pytest

from engines.a2v.visemes import SPEECH_INDEX, AlignmentTrack
from engines.tts import PiperTTS


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS.load(threads=1)


def test_chunks_carry_alignments_covering_the_audio(tts: PiperTTS) -> None:
    chunks = list(tts.synthesize("Hello there. How are you?"))
    assert len(chunks) == 2
    track = AlignmentTrack(25)
    frames = []
    for c in chunks:
        assert c.sample_rate == tts.sample_rate == 22_050
        assert c.pcm.dtype == np.float32 and c.pcm.ndim == 1
        assert sum(a.num_samples for a in c.alignments) == len(c.pcm)
        assert c.alignments[0].phoneme == "^" and c.alignments[-1].phoneme == "$"
        frames.append(track.push(c.alignments, c.sample_rate, num_samples=len(c.pcm)))
    frames.append(track.flush())
    out = np.concatenate(frames)
    total = sum(len(c.pcm) for c in chunks)
    assert len(out) == int(np.ceil(total * 25 / 22_050))
    # speech frames are where the audio is loud
    rms = np.array(
        [
            np.sqrt(np.mean(np.concatenate([c.pcm for c in chunks])[int(k * 882) : int((k + 1) * 882)] ** 2))
            for k in range(len(out))
        ]
    )
    speech = out[:, SPEECH_INDEX] > 0.5
    assert rms[speech].mean() > 3 * rms[~speech].mean()


def test_shipped_network_follows_the_alignment_path(tts: PiperTTS) -> None:
    """Unseen text through Piper: the network's jawOpen tracks the alignment path, visemes mostly agree."""
    from engines.a2v.runtime import load_a2v
    from engines.a2v.visemes import JAW_OPEN_INDEX

    a2v = load_a2v("onnx-cpu")
    text = "Fourteen purple giraffes quietly watched the sunset over Lisbon yesterday."
    chunks = list(tts.synthesize(text))
    track = AlignmentTrack(25)
    ref = np.concatenate([track.push(c.alignments, c.sample_rate) for c in chunks] + [track.flush()])
    pred = a2v.infer(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate)
    assert pred.shape == ref.shape
    assert np.corrcoef(pred[:, JAW_OPEN_INDEX], ref[:, JAW_OPEN_INDEX])[0, 1] > 0.8
    assert np.mean(pred[:, :15].argmax(1) == ref[:, :15].argmax(1)) > 0.55

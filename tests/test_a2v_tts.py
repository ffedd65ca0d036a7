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

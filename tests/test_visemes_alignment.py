"""The alignment path: phoneme tables, segment resolution, exact frame timing, chunked streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.a2v.visemes import (
    A2V_ARKIT_CHANNELS,
    A2V_CHANNELS,
    JAW_OPEN_INDEX,
    SPEECH_INDEX,
    AlignmentError,
    AlignmentTrack,
    alignments_to_frames,
    alignments_to_segments,
    chunks_to_frames,
    phoneme_to_viseme,
    viseme_target_table,
    viseme_targets,
)
from engines.arkit import ARKIT_BLENDSHAPES, VISEMES

SR = 16_000
V = VISEMES.index


def test_channel_layout_uses_canonical_names() -> None:
    assert A2V_CHANNELS[:15] == VISEMES
    assert A2V_CHANNELS[-1] == "speech"
    assert set(A2V_ARKIT_CHANNELS) <= set(ARKIT_BLENDSHAPES)
    assert A2V_CHANNELS[JAW_OPEN_INDEX] == "jawOpen"


@pytest.mark.parametrize(
    ("phoneme", "viseme"),
    [("p", "PP"), ("m", "PP"), ("f", "FF"), ("ð", "TH"), ("t", "DD"), ("ŋ", "kk"), ("ʃ", "CH"), ("z", "SS"),
     ("l", "nn"), ("ɹ", "RR"), ("æ", "aa"), ("ɛ", "E"), ("ɪ", "I"), ("ɔ", "O"), ("ʊ", "U"), (".", "sil"),
     ("^", "sil"), ("$", "sil")],
)  # fmt: skip
def test_phoneme_table(phoneme: str, viseme: str) -> None:
    assert phoneme_to_viseme(phoneme) == viseme


def test_modifiers_spaces_and_h_are_resolved() -> None:
    # ^ h ˈ ɛ ː l  <space> ə $ : stress time → next (ɛ), length → previous (ɛ), space split, h → next vowel
    al = [("^", 100), ("h", 50), ("ˈ", 30), ("ɛ", 100), ("ː", 20), ("l", 40), (" ", 10), ("ə", 60), ("$", 90)]
    segs = alignments_to_segments(al)
    assert sum(s.end - s.start for s in segs) == 500
    assert [(VISEMES[s.viseme], s.end - s.start) for s in segs] == [
        ("sil", 100),
        ("E", 200),  # h(50) + stress(30) + ɛ(100) + length(20)
        ("nn", 45),  # l(40) + half the space
        ("E", 65),  # ə(60) + other half
        ("sil", 90),
    ]


def test_frames_are_exactly_timed() -> None:
    # 25 fps at 16 kHz: one frame = 640 samples. PP exactly covers frame 2, aa covers frames 3..5.
    al = [("^", 1280), ("p", 640), ("a", 1920), ("$", 1280)]
    f = alignments_to_frames(al, SR, fps=25)
    assert f.shape == (8, len(A2V_CHANNELS))
    np.testing.assert_allclose(f[:, :15].sum(1), 1.0, atol=1e-6)
    assert f[2, V("PP")] == pytest.approx(1.0)
    assert f[1, V("sil")] == pytest.approx(1.0)
    assert np.all(f[3:6, V("aa")] == pytest.approx(1.0))
    assert f[2, SPEECH_INDEX] == pytest.approx(1.0) and f[0, SPEECH_INDEX] == 0.0
    # lips close during PP (dominant), the jaw is widest inside the vowel, closed in leading silence
    assert f[2, JAW_OPEN_INDEX] < 0.1
    assert f[4, JAW_OPEN_INDEX] > 0.5
    assert f[0, JAW_OPEN_INDEX] < 0.05


def test_partial_frame_fractions_and_frame_count() -> None:
    al = [("^", 320), ("a", 640), ("$", 100)]  # 1060 samples → ceil(1060 / 640) = 2 frames
    f = alignments_to_frames(al, SR, fps=25)
    assert f.shape[0] == 2
    assert f[0, V("sil")] == pytest.approx(0.5) and f[0, V("aa")] == pytest.approx(0.5)
    assert f[0, SPEECH_INDEX] == pytest.approx(0.5)


def test_start_sample_places_the_sentence_on_the_timeline() -> None:
    al = [("^", 640), ("a", 1280), ("$", 640)]
    f = alignments_to_frames(al, SR, fps=25, start_sample=640 * 10)
    assert f.shape[0] == 4
    assert f[1, V("aa")] == pytest.approx(1.0)


def _random_sentence(rng: np.random.Generator) -> list[tuple[str, int]]:
    phones = list("pbmfvθðtdkgʃszlnɹaæɛɪiɔoʊuəh ˈː")
    al = [("^", int(rng.integers(100, 2000)))]
    al += [(str(rng.choice(phones)), int(rng.integers(0, 3000))) for _ in range(int(rng.integers(1, 30)))]
    al.append(("$", int(rng.integers(100, 3000))))
    return al


@pytest.mark.parametrize("fps", [25, 30])
def test_track_streaming_equals_whole_timeline(fps: int) -> None:
    rng = np.random.default_rng(3)
    sentences = [(_random_sentence(rng), int(rng.integers(0, 9000))) for _ in range(6)]
    whole = chunks_to_frames(sentences, SR, fps=fps)
    track = AlignmentTrack(fps)
    parts = []
    elapsed = 0
    for al, gap in sentences:
        got = track.push(al, SR)
        elapsed += sum(n for _, n in al)
        # zero lookahead: every frame whose interval is covered is out, no more
        assert track.frames_emitted == math.floor(elapsed * fps / SR + 1e-9)
        parts += [got, track.push_silence(gap, SR)]
        elapsed += gap
    parts.append(track.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape == (math.ceil(elapsed * fps / SR), len(A2V_CHANNELS))
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-6)


def test_track_accepts_piper_like_objects_and_checks_lengths() -> None:
    class PA:
        def __init__(self, phoneme: str, num_samples: int) -> None:
            self.phoneme, self.num_samples = phoneme, num_samples

    track = AlignmentTrack(25)
    track.push([PA("^", 640), PA("a", 640)], SR, num_samples=1280)
    assert track.frames_emitted == 2
    with pytest.raises(AlignmentError):
        track.push([("a", 100)], SR, num_samples=200)
    with pytest.raises(AlignmentError):
        AlignmentTrack(0)


def test_viseme_targets() -> None:
    table = viseme_target_table()
    assert table.shape == (15, len(A2V_ARKIT_CHANNELS))
    jaw = A2V_ARKIT_CHANNELS.index("jawOpen")
    assert VISEMES[int(table[:, jaw].argmax())] == "aa"
    assert viseme_targets("PP")["jawOpen"] < 0.05
    assert viseme_targets("U")["mouthPucker"] > 0.5
    assert all(v == 0.0 for v in viseme_targets("sil").values())
    assert set(viseme_targets("E")) == set(A2V_ARKIT_CHANNELS)
    with pytest.raises(AlignmentError):
        viseme_targets("XX")

"""Streaming prosody (pitch, level, accents, phrase ends) and stress-mark emphasis on the alignment path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.expression.prosody import (
    HALF,
    HOP,
    SAMPLE_RATE,
    N,
    ProsodyError,
    ProsodyTracker,
    analyse,
    yin_f0,
)
from engines.expression.stress import (
    SECONDARY_STRENGTH,
    emphasis_events,
    stressed_syllables,
)
from engines.tts import Alignment


def voice(
    sr: int,
    seconds: float,
    f0: float | np.ndarray = 120.0,
    on: tuple[float, float] = (0.1, 1.5),
    amp: float = 0.2,
) -> np.ndarray:
    """A buzzy harmonic 'voice' with a given f0 (constant or per sample), sounding between on[0] and on[1]."""
    t = np.arange(int(sr * seconds)) / sr
    f = np.broadcast_to(np.asarray(f0, np.float64), t.shape)
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 9)) * amp
    x[(t < on[0]) | (t >= on[1])] = 0.0
    return x.astype(np.float32)


def bump(sr: int, seconds: float, at: float, semitones: float, base: float = 110.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return base * 2 ** (semitones * np.exp(-(((t - at) / 0.07) ** 2)) / 12)


@pytest.mark.parametrize("f0", [55.0, 80.0, 120.0, 220.0, 350.0])
def test_yin_finds_the_fundamental(f0: float) -> None:
    x = voice(SAMPLE_RATE, 0.2, f0, on=(0, 1))
    windows = np.stack([x[i : i + N] for i in (0, 800, 1600)])
    est, cmndf = yin_f0(windows)
    np.testing.assert_allclose(est, f0, rtol=0.01)
    assert (cmndf < 0.15).all()
    silent, _ = yin_f0(np.zeros((2, N)))
    assert (silent == 0).all()
    noise, _ = yin_f0(np.random.default_rng(0).normal(0, 0.1, (3, N)))
    assert (noise == 0).all()  # white noise is not voiced


def test_one_accent_on_a_pitch_rise_none_on_a_flat_voice_and_a_phrase_end_after_it() -> None:
    sr, fps = 22_050, 25
    accented = analyse(voice(sr, 2.0, bump(sr, 2.0, 0.8, 4.0)), sr, fps)
    flat = analyse(voice(sr, 2.0, 110.0), sr, fps)
    assert len(accented) == len(flat) == 50
    hits = [f.index for f in accented if f.accent]
    assert hits == [20]  # 0.8 s × 25 fps
    assert 0.3 <= accented[20].accent <= 1.0
    assert not any(f.accent for f in flat)
    voiced = [f for f in flat if 3 <= f.index < 37]
    assert all(abs(f.f0_hz - 110.0) < 2.0 for f in voiced)
    # the voice stops at 1.5 s; the phrase end is sure after PAUSE_S (0.12 s) of quiet: frame 40
    assert [f.index for f in flat if f.phrase_end] == [40]
    assert flat[45].level_db < -90 and flat[20].level_db > -20


def test_larger_rises_make_stronger_accents() -> None:
    sr = 16_000
    weak = analyse(voice(sr, 1.6, bump(sr, 1.6, 0.8, 1.5)), sr)
    strong = analyse(voice(sr, 1.6, bump(sr, 1.6, 0.8, 5.0)), sr)
    w = max(f.accent for f in weak)
    s = max(f.accent for f in strong)
    assert s > w + 0.2
    assert max(f.prominence for f in strong) > max(f.prominence for f in weak)


def test_a_quiet_rise_is_no_accent() -> None:
    sr = 16_000
    f0 = bump(sr, 2.0, 1.2, 4.0)
    x = voice(sr, 2.0, f0)
    t = np.arange(len(x)) / sr
    x[(t > 1.0) & (t < 1.4)] *= 0.02  # -34 dB during the rise
    assert not any(f.accent for f in analyse(x, sr))


@pytest.mark.parametrize("sr", [16_000, 22_050, 48_000])
@pytest.mark.parametrize("fps", [25, 30])
def test_streaming_in_any_chunks_equals_one_shot(sr: int, fps: int) -> None:
    x = voice(sr, 2.0, bump(sr, 2.0, 0.7, 4.0), on=(0.1, 1.3))
    whole = analyse(x, sr, fps)
    rng = np.random.default_rng(sr + fps)
    tracker = ProsodyTracker(sr, fps)
    parts = []
    i = 0
    while i < len(x):
        n = int(rng.integers(1, 4000))
        parts += tracker.push(x[i : i + n])
        i += n
    parts += tracker.flush()
    assert parts == whole
    assert [f.index for f in parts] == list(range(math.ceil(len(x) * fps / sr)))


@pytest.mark.parametrize("fps", [25, 30])
def test_frames_come_out_within_the_lookahead(fps: int) -> None:
    sr = SAMPLE_RATE  # no resampler delay: the bound is exact
    x = voice(sr, 1.0, 120.0, on=(0, 1))
    tracker = ProsodyTracker(sr, fps, lookahead_s=0.08)
    assert tracker.lookahead_frames == 1  # 80 ms minus the analysis window's reach leaves one frame
    step = 80  # 5 ms
    out = 0
    for i in range(0, len(x), step):
        got = tracker.push(x[i : i + step])
        pushed_s = (i + step) / sr
        out += len(got)
        # every frame whose end is at least the lookahead behind the audio is out
        due = math.floor((pushed_s - 0.08) * fps + 1e-9)
        assert out >= max(0, due), (pushed_s, out, due)
        # and the tracker never needs more than the lookahead: it used at most this much audio
        needed = (out + tracker.lookahead_frames) / fps + (HALF + HOP) / sr
        assert needed <= pushed_s + 0.08 + 1e-9


def test_bad_arguments() -> None:
    with pytest.raises(ProsodyError, match="fps"):
        ProsodyTracker(16_000, fps=0)
    with pytest.raises(ProsodyError, match="lookahead"):
        ProsodyTracker(16_000, lookahead_s=-1)
    t = ProsodyTracker(16_000)
    t.flush()
    with pytest.raises(ProsodyError, match="flushed"):
        t.push(np.zeros(10, np.float32))


# --- stress marks on the alignment path ----------------------------------------------------------


def _align(spec: str, samples: int = 1000) -> list[Alignment]:
    """'^ h ə l ˈ oʊ ...' → alignments of `samples` samples each (stress marks 0 samples, as Piper)."""
    out = []
    for p in spec.split("|"):
        for ch in p:
            out.append(Alignment(ch, 0 if ch in "ˈˌ" else samples))
    return out


def test_stress_marks_give_their_syllable_onsets() -> None:
    # "hello world, bigger test." : həlˈoʊ wˈɜːld , bˈɪɡɚ tˌɛst .
    al = _align("^|həlˈoʊ wˈɜːld|,| |bˈɪɡɚ tˌɛst|.|$")
    syl = stressed_syllables(al)
    starts = np.cumsum([0] + [a.num_samples for a in al])
    marks = [int(starts[i]) for i, a in enumerate(al) if a.phoneme in "ˈˌ"]
    assert [s.sample for s in syl] == marks  # each syllable starts where its stress mark stands
    assert [(s.primary, s.phrase) for s in syl] == [(True, 0), (True, 0), (True, 1), (False, 1)]
    assert stressed_syllables(_align("^|ðə ˈ|.|$")) == []  # a mark with no vowel after it is no syllable


def test_emphasis_without_prosody_is_the_last_primary_stress_of_each_phrase() -> None:
    sr, fps = 25_000, 25  # 1000 samples = 40 ms = one frame per phoneme
    al = _align("^|ðə kˈæt sˈæt|,| |ɔn ðə mˈæt ænd slˈɛpt|.|$")
    events = emphasis_events(al, sr, fps)
    syl = stressed_syllables(al)
    onset_frames = {s.sample * fps // sr for s in syl}
    assert {e.frame for e in events} <= onset_frames  # every beat sits on a stressed syllable's onset
    strengths = {e.frame: e.strength for e in events}
    last_of_phrase = [max(s.sample for s in syl if s.phrase == p) * fps // sr for p in (0, 1)]
    assert all(strengths[k] == 1.0 for k in last_of_phrase)
    assert all(v in (1.0, SECONDARY_STRENGTH) for v in strengths.values())


def test_emphasis_keeps_the_stronger_of_two_close_beats_and_follows_the_start_offset() -> None:
    sr, fps = 100_000, 25  # 1000 samples = 10 ms: the stresses are 40-60 ms apart
    al = _align("^|bˈɪɡ ɹˈɛd|.|$")
    events = emphasis_events(al, sr, fps)
    assert len(events) == 1 and events[0].strength == 1.0
    shifted = emphasis_events(al, sr, fps, start_sample=sr)  # one second later
    assert [e.frame for e in shifted] == [events[0].frame + fps]


def test_emphasis_with_prosody_puts_the_nucleus_where_the_voice_peaks() -> None:
    from engines.expression.prosody import ProsodyFrame

    sr, fps = 25_000, 25
    al = _align("^|ðə kˈæt sˈæt ɔn ðə mˈæt|.|$")
    syl = stressed_syllables(al)
    frames = [s.sample * fps // sr for s in syl]

    def prosody(peak_at: int) -> list[ProsodyFrame]:
        return [ProsodyFrame(k, 100.0, -20.0, 1.5 if k == peak_at else 0.2, 0.0, False) for k in range(30)]

    events = emphasis_events(al, sr, fps, prosody=prosody(frames[0]))
    top = max(events, key=lambda e: e.strength)
    assert top.frame == frames[0] and top.strength == 1.0  # the voice's peak, not the last stress

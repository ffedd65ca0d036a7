"""The expressive layer in the motion layers and AvatarStream (issue 17).

Expressiveness 0 is today's motion bit for bit (a golden file from the code
before the change); inferred emotions apply as their sentence plays and yield
to the API's; emphasis beats sit on stressed syllables (real Piper alignments);
phrase ends draw blinks, the user's pauses nods, and the end of the user's
turn a thinking look until the reply's first audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS
from engines.expression.emotions import EmotionCue
from engines.expression.stress import stressed_syllables
from engines.tts import PiperTTS, SpeechChunk
from realtime.media.motion import (
    MOTION_CHANNELS,
    ExpressionStyle,
    MotionError,
    MotionLayers,
    SpeechFrame,
    expression_style,
)
from realtime.media.stream import AvatarStream, AvatarStreamError
from tests.expression_scenario import run_scenario

CHANNELS = (*ARKIT_BLENDSHAPES, *POSE_CHANNELS)
GOLDEN = Path(__file__).parent / "data" / "motion_before_expression.npz"


def ch(name: str) -> int:
    return CHANNELS.index(name)


def brow(params: np.ndarray) -> np.ndarray:
    return params[..., ch("browInnerUp")]


@pytest.fixture(scope="module")
def piper() -> PiperTTS:
    return PiperTTS.load()


@pytest.fixture(scope="module")
def sentence(piper: PiperTTS) -> SpeechChunk:
    chunks = list(piper.synthesize("I really love the new garden, but the weather was terrible yesterday."))
    assert len(chunks) == 1
    return chunks[0]


# --- expressiveness 0 ------------------------------------------------------------------------------


@pytest.mark.parametrize("extras", [False, True])
def test_expressiveness_zero_reproduces_the_motion_of_before_exactly(extras: bool) -> None:
    golden = np.load(GOLDEN)
    assert tuple(golden["channels"]) == CHANNELS
    params = run_scenario(lambda c, fps, seed: AvatarStream(c, fps=fps, seed=seed), extras=extras)
    # same machine, same code path: bit-exact (the golden came from the code before issue 17)
    np.testing.assert_array_equal(params, golden["params"])
    expressive = run_scenario(
        lambda c, fps, seed: AvatarStream(c, fps=fps, seed=seed, expressiveness=0.6), extras=extras
    )
    assert np.abs(expressive - golden["params"]).max() > 0.05  # the check can fail: expression changes frames


def test_new_inputs_are_ignored_at_zero_in_the_motion_layers() -> None:
    def run(extra: bool) -> np.ndarray:
        m = MotionLayers(MOTION_CHANNELS, 25, seed=3)
        out = []
        for k in range(300):
            if extra and k in (20, 60, 140):
                m.user_pause(k)
                m.set_thinking(True, k)
            sp = None
            if 50 <= k < 200:
                sp = SpeechFrame({"jawOpen": 0.3}, 1.0, k % 11 == 0, 0.3, 1.0 if extra else 0.0, extra)
            out.append(m.frame(k, sp))
        return np.stack(out)

    np.testing.assert_array_equal(run(False), run(True))


# --- emotion cues ----------------------------------------------------------------------------------


def events_of(stream: AvatarStream) -> list[dict[str, Any]]:
    """The stream's events as the websocket sends them."""
    events: list[dict[str, Any]] = []
    stream.add_listener(lambda e: events.append(e.to_json()))
    return events


def play_out(stream: AvatarStream) -> list[Any]:
    jobs = []
    while stream.pending_utterances:
        jobs.append(stream.next_frame_job())
    return jobs


def test_each_sentence_emotion_applies_as_it_plays_and_is_reported(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25, expressiveness=0.6)
    events = events_of(stream)
    happy = EmotionCue("happy", 0.9, "text", 0.8, "I really love it.")
    sad = EmotionCue("sad", 0.8, "tag", 0.0, "But it rained.")
    stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments, emotion=happy)
    stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments, emotion=sad)
    stream.end_utterance()
    jobs = play_out(stream)
    emotions = [e for e in events if e["type"] == "emotion"]
    assert [(e["name"], e["source"], e["applied"], e["text"]) for e in emotions] == [
        ("happy", "text", True, "I really love it."),
        ("sad", "tag", True, "But it rained."),
    ]
    # the second sentence's emotion arrives ~0.2 s before its first sample: the smile fades, the frown comes
    n = len(sentence.pcm) / sentence.sample_rate * 25
    smile = np.array([j.params[ch("mouthSmileLeft")] for j in jobs])
    frown = np.array([j.params[ch("mouthFrownLeft")] for j in jobs])
    first, second = slice(12, int(n) - 8), slice(int(n) + 10, len(jobs) - 2)
    assert smile[first].mean() > smile[second].mean() + 0.1
    assert frown[second].mean() > frown[first].mean() + 0.1


def test_the_api_emotion_overrides_the_inferred_one_until_cleared(sentence: SpeechChunk) -> None:
    def smile(stream: AvatarStream) -> float:
        stream.push_tts_audio(
            sentence.pcm, sentence.sample_rate, sentence.alignments, emotion=EmotionCue("happy", 1.0, "text")
        )
        stream.end_utterance()
        return float(np.mean([j.params[ch("mouthSmileLeft")] for j in play_out(stream)[12:]]))

    free = AvatarStream(CHANNELS, fps=25, expressiveness=0.6)
    free_smile = smile(free)
    assert free._motion.emotion == "happy"
    stream = AvatarStream(CHANNELS, fps=25, expressiveness=0.6)
    events = events_of(stream)
    stream.set_emotion("sad", 0.7)
    held_smile = smile(stream)
    assert stream._motion.emotion == "sad"  # the API's choice held through the happy sentence
    assert held_smile < free_smile - 0.2
    inferred = [e for e in events if e["type"] == "emotion" and e["source"] == "text"]
    assert inferred and inferred[0]["name"] == "happy" and inferred[0]["applied"] is False
    stream.clear_emotion()  # back to automatic: the last inferred emotion applies at once
    assert stream._motion.emotion == "happy"
    after = [stream.next_frame_job() for _ in range(15)]
    assert after[-1].params[ch("mouthSmileLeft")] > 0.3


def test_inferred_emotions_are_reported_but_not_shown_at_expressiveness_zero(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    events = events_of(stream)
    stream.push_tts_audio(
        sentence.pcm, sentence.sample_rate, sentence.alignments, emotion=EmotionCue("happy", 1.0, "text")
    )
    stream.end_utterance()
    play_out(stream)
    assert stream._motion.emotion == "neutral"
    assert [e["applied"] for e in events if e["type"] == "emotion"] == [False]


# --- emphasis --------------------------------------------------------------------------------------


def speech_frames(stream: AvatarStream) -> list[SpeechFrame | None]:
    """What the stream hands the motion layers each frame (recorded, then passed on)."""
    seen: list[SpeechFrame | None] = []
    motion_frame = stream._motion.frame

    def spy(k: int, speech: SpeechFrame | None) -> np.ndarray:
        seen.append(speech)
        return motion_frame(k, speech)

    stream._motion.frame = spy  # type: ignore[method-assign]
    return seen


def test_emphasis_beats_line_up_with_stressed_syllables_on_the_alignment_path(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25, expressiveness=0.6)
    seen = speech_frames(stream)
    stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments)
    stream.end_utterance()
    jobs = play_out(stream)
    beats = {i: s.emphasis for i, s in enumerate(x for x in seen if x is not None) if s.emphasis > 0}
    # stressed syllables, found here from the phoneme string itself: each ˈ that a vowel follows
    onsets = set()
    offset, mark = 0, None
    for a in sentence.alignments:
        if a.phoneme == "ˈ":
            mark = offset
        elif mark is not None and a.phoneme in "aeiouæɑɒɔəɛɜɪʊʌ":
            onsets.add(mark * 25 // sentence.sample_rate)
            mark = None
        offset += a.num_samples
    assert len(beats) >= 2
    assert set(beats) <= onsets, (sorted(beats), sorted(onsets))
    assert {s.sample * 25 // sentence.sample_rate for s in stressed_syllables(sentence.alignments)} >= onsets
    # and the brows rise right at each beat
    b = brow(np.stack([j.params for j in jobs if j.speaking]))
    for k in beats:
        assert b[k + 3] > b[k - 1] + 0.02, k


def test_the_network_path_takes_beats_from_pitch_accents(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25, expressiveness=0.6)  # no lip model: mouth rests, audio plays
    seen = speech_frames(stream)
    for i in range(0, len(sentence.pcm), 2205):
        stream.push_tts_audio(sentence.pcm[i : i + 2205], sentence.sample_rate)
    stream.end_utterance()
    play_out(stream)
    frames = [s for s in seen if s is not None]
    assert sum(s.emphasis > 0 for s in frames) >= 2  # accents found in the audio alone
    assert any(s.phrase_end for s in frames)  # the comma's pause


# --- listening, thinking, blinks -------------------------------------------------------------------


def test_thinking_look_between_the_users_turn_and_the_reply(sentence: SpeechChunk) -> None:
    def run(e: float) -> tuple[np.ndarray, list[Any]]:
        stream = AvatarStream(CHANNELS, fps=25, seed=4, expressiveness=e)
        stream.set_user_speaking(True)
        before = [stream.next_frame_job() for _ in range(30)]
        stream.set_user_speaking(False)
        waiting = [stream.next_frame_job() for _ in range(25)]
        stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments)
        stream.end_utterance()
        reply = [stream.next_frame_job() for _ in range(40)]
        return np.stack([j.params for j in before + waiting + reply]), reply

    on, reply = run(0.6)
    off, _ = run(0.0)
    brow_down = on[:, ch("browDownLeft")] - off[:, ch("browDownLeft")]
    assert abs(brow_down[:30]).max() < 1e-6  # nothing before the turn ends
    assert brow_down[50:55].mean() > 0.15  # knitted brow while the reply is awaited
    assert on[50:55, ch("eyeGazeY")].mean() < off[50:55, ch("eyeGazeY")].mean() - 0.1  # looks up/away
    assert reply[0].speaking and brow_down[-5:].max() < 0.02  # gone once the reply plays


def test_thinking_gives_up_without_a_reply() -> None:
    stream = AvatarStream(CHANNELS, fps=25, expressiveness=0.6)
    stream.set_user_speaking(True)
    stream.set_user_speaking(False)
    jobs = [stream.next_frame_job() for _ in range(25 * 9)]
    assert jobs[50].params[ch("browDownLeft")] > 0.15
    assert jobs[-1].params[ch("browDownLeft")] < 0.01  # after 8 s it stops waiting


def test_user_pauses_draw_backchannel_nods() -> None:
    def pitch(pauses: bool, e: float) -> np.ndarray:
        stream = AvatarStream(CHANNELS, fps=25, seed=9, expressiveness=e)
        stream.set_user_speaking(True)
        out = []
        for k in range(400):
            if pauses and k % 50 == 25:
                stream.user_pause()
            out.append(stream.next_frame_job().params[ch("headPitch")])
        return np.array(out)

    quiet, nodding = pitch(False, 0.6), pitch(True, 0.6)
    diff = nodding - quiet
    after = [diff[k : k + 15].max() for k in range(25, 400, 50)]
    assert sum(d > 0.015 for d in after) >= 4  # most pauses get a visible nod (p = 0.75, refractory 1.2 s)
    np.testing.assert_array_equal(pitch(True, 0.0), pitch(False, 0.0))  # none at expressiveness 0


def test_phrase_ends_draw_blinks() -> None:
    def blink_onsets(e: float) -> tuple[list[int], list[int]]:
        m = MotionLayers(MOTION_CHANNELS, 25, seed=21, expressiveness=e)
        ends, blinks, prev = [], [], 0.0
        for k in range(25 * 120):
            phrase_end = k % 60 == 30
            if phrase_end:
                ends.append(k)
            sp = SpeechFrame({"jawOpen": 0.2}, 1.0, False, 0.2, 0.0, phrase_end)
            v = float(m.frame(k, sp)[MOTION_CHANNELS.index("eyeBlinkLeft")])
            if v > 0.3 >= prev:
                blinks.append(k)
            prev = v
        return ends, blinks

    def share(ends: list[int], blinks: list[int]) -> float:
        return float(np.mean([any(0 <= b - k <= 8 for b in blinks) for k in ends]))

    on = share(*blink_onsets(0.6))
    off = share(*blink_onsets(0.0))
    assert on > 0.45 and off < 0.25 and on > off + 0.25, (on, off)


# --- controls --------------------------------------------------------------------------------------


def test_expressiveness_and_style_are_checked() -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(AvatarStreamError, match="expressiveness"):
            stream.set_expressiveness(bad)
    stream.set_expressiveness(1.0)
    assert stream.expressiveness == 1.0
    with pytest.raises(MotionError, match="expressiveness"):
        MotionLayers(MOTION_CHANNELS, 25, expressiveness=2.0)
    with pytest.raises(MotionError, match="nod"):
        ExpressionStyle(nod=-1.0)
    assert expression_style({"speaking_style": {"nod": 1.5, "brow": "0.5"}}) == ExpressionStyle(
        nod=1.5, brow=0.5
    )
    assert (
        expression_style({"speaking_style": {"nod": "lots"}}) == ExpressionStyle()
    )  # malformed: ignored, logged
    assert expression_style({}) == ExpressionStyle()
    replica = {  # the replica builder's schema, version 1 (engines/create/speaking_style.py)
        "version": 1,
        "mouth_gain": {"jawOpen": 0.55, "mouthSmileLeft": 1.2, "mouthSmileRight": 1.4},
        "blink_rate_per_min": 8.5,
        "head_sway_rms_deg": {"pitch": 2.0, "yaw": 0.3, "roll": 0.2},
    }
    style = expression_style({"speaking_style": replica})
    assert (style.nod, style.brow, style.phrase_blink) == (2.0, 1.0, 0.5)
    assert style.emotion == pytest.approx(1.3)


def test_style_scales_the_emphasis() -> None:
    def peak(style: ExpressionStyle) -> float:
        m = MotionLayers(MOTION_CHANNELS, 25, seed=1, expressiveness=0.6, expression_style=style)
        out = [m.frame(k, SpeechFrame({}, 1.0, False, 0.3, 1.0 if k == 5 else 0.0)) for k in range(30)]
        return float(np.stack(out)[:, MOTION_CHANNELS.index("browInnerUp")].max())

    assert peak(ExpressionStyle(brow=2.0)) > 1.5 * peak(ExpressionStyle(brow=1.0)) > 0.2

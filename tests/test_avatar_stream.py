"""AvatarStream with real Piper speech and alignments: one media clock, audio master.

Real parts throughout: the bundled Piper voice, the alignment path, the motion
layers. (The a2v-network path is tested with the shipped ONNX model in
tests/test_avatar_stream_a2v.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from event_log import record

from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS
from engines.tts import PiperTTS, SpeechChunk
from realtime.events import Event, Interrupted
from realtime.media.stream import AvatarStream, AvatarStreamError, FrameJob

CHANNELS = (*ARKIT_BLENDSHAPES, *POSE_CHANNELS)
JAW = CHANNELS.index("jawOpen")


@pytest.fixture(scope="module")
def sentence() -> SpeechChunk:
    tts = PiperTTS.load()
    chunks = list(tts.synthesize("Hello there, what a wonderful day to talk about the moon."))
    assert len(chunks) == 1
    return chunks[0]


def run(stream: AvatarStream, frames: int) -> list[FrameJob]:
    return [stream.next_frame_job() for _ in range(frames)]


@pytest.mark.parametrize(("fps", "spf", "pts_step"), [(25, 1920, 3600), (30, 1600, 3000)])
def test_idle_frames_are_silent_and_stamped_from_the_audio_clock(fps: int, spf: int, pts_step: int) -> None:
    stream = AvatarStream(CHANNELS, fps=fps)
    jobs = run(stream, 2 * fps)
    assert [j.index for j in jobs] == list(range(2 * fps))
    assert [j.pts for j in jobs] == [k * pts_step for k in range(2 * fps)]
    assert all(j.audio.dtype == np.int16 and j.audio.shape == (spf,) for j in jobs)
    assert all(not j.audio.any() and not j.speaking for j in jobs)
    jaw = np.array([j.params[JAW] for j in jobs])
    assert jaw.max() <= 0.02  # the mouth rests in silence
    assert stream.state == "idle"


def test_aligned_utterance_audio_is_conserved_and_moves_the_mouth(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    events: list[dict[str, object]] = []
    stream.add_listener(record(events))
    run(stream, 3)
    stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments)
    stream.end_utterance()
    expected = soxr.resample(sentence.pcm, sentence.sample_rate, 48_000, quality="HQ")
    n_frames = int(np.ceil(len(expected) / 1920)) + 10
    jobs = run(stream, n_frames)
    speaking = [j for j in jobs if j.speaking]
    # starts on the very next frame: the alignment path has no lookahead
    assert speaking[0].index == 3
    assert len(speaking) == int(np.ceil(len(expected) / 1920))
    audio = np.concatenate([j.audio for j in speaking]).astype(np.float32) / 32767.0
    assert abs(len(audio) - len(expected)) < 1920  # only the last frame's zero padding differs
    n = len(expected)
    # streaming resample == whole resample: error at least 50 dB below the signal (int16 quantisation ~ 90 dB)
    err = audio[: n - 64] - expected[: n - 64]
    snr_db = 20 * np.log10(np.sqrt(np.mean(expected**2)) / max(float(np.sqrt(np.mean(err**2))), 1e-12))
    assert snr_db > 50, snr_db
    assert not np.any(audio[n + 64 :])
    jaw = np.array([j.params[JAW] for j in speaking])
    assert jaw.max() > 0.3  # the mouth opens while speaking
    assert np.corrcoef(jaw, [j.mouth_open for j in speaking])[0, 1] > 0.95  # lip-sync values pass through
    # audio never bypasses the avatar: after the utterance, silence and a closing mouth
    after = [j for j in jobs if j.index > speaking[-1].index + 5]
    assert after and all(not j.audio.any() for j in after)
    assert max(j.params[JAW] for j in after) < 0.1
    kinds = [e["type"] for e in events]
    assert "utterance_start" in kinds and "utterance_done" in kinds
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states == ["speaking", "idle"]


def test_alignments_for_a_sentence_split_into_chunks_give_the_same_mouth(sentence: SpeechChunk) -> None:
    whole = AvatarStream(CHANNELS, fps=25, seed=3)
    whole.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments)
    whole.end_utterance()
    split = AvatarStream(CHANNELS, fps=25, seed=3)
    thirds = np.array_split(sentence.pcm, 3)
    split.push_tts_audio(thirds[0], sentence.sample_rate, sentence.alignments)
    split.push_tts_audio(thirds[1], sentence.sample_rate)
    split.push_tts_audio(thirds[2], sentence.sample_rate)
    split.end_utterance()
    a = run(whole, 100)
    b = run(split, 100)
    np.testing.assert_allclose([j.mouth_open for j in a], [j.mouth_open for j in b], atol=1e-6)
    assert sum(j.speaking for j in a) == sum(j.speaking for j in b)


def test_interrupt_drops_audio_at_once_and_closes_the_mouth_within_150ms(sentence: SpeechChunk) -> None:
    for fps in (25, 30):
        stream = AvatarStream(CHANNELS, fps=fps)
        stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments)
        stream.end_utterance()
        jobs = run(stream, fps)  # one second into the sentence
        assert any(j.params[JAW] > 0.2 for j in jobs)
        k = stream.frame_index
        stream.interrupt()
        after = run(stream, fps)
        assert all(not j.audio.any() for j in after)  # pending audio dropped immediately
        within = int(0.150 * fps)
        assert all(j.params[JAW] < 0.1 for j in after[within:])
        assert after[0].index == k
        assert stream.state in ("listening", "idle")
        assert stream.pending_utterances == 0


def test_underrun_keeps_the_clock_and_resumes(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    half = len(sentence.pcm) // 2
    stream.push_tts_audio(
        sentence.pcm[:half], sentence.sample_rate
    )  # no alignments, no a2v model: mouth rests
    jobs = run(stream, 80)
    assert stream.stats.underrun_samples > 0  # the TTS was slower than real time
    assert [j.index for j in jobs] == list(range(80))
    stream.push_tts_audio(sentence.pcm[half:], sentence.sample_rate)
    stream.end_utterance()
    more = run(stream, 80)
    assert any(j.audio.any() for j in more)
    assert stream.state == "idle"


def test_user_speaking_switches_to_listening() -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    stream.set_user_speaking(True)
    assert stream.state == "listening"
    stream.set_user_speaking(False)
    assert stream.state == "idle"


@pytest.mark.parametrize(
    ("pcm", "rate", "match"),
    [
        (np.zeros(100, np.float32), 1, "sample rate"),
        (np.zeros(100, np.float32), 384_000, "sample rate"),
        (np.zeros((2, 2, 2), np.float32), 16_000, "1-D"),
        (np.array(["a"]), 16_000, "int16 or float"),
    ],
)
def test_bad_audio_is_refused_clearly(pcm: np.ndarray, rate: int, match: str) -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    with pytest.raises(AvatarStreamError, match=match):
        stream.push_tts_audio(pcm, rate)
    assert stream.next_frame_job().index == 0  # the stream keeps going


def test_hostile_samples_become_silence_not_noise() -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    pcm = np.full(16_000, np.nan, np.float32)
    pcm[::2] = np.inf
    stream.push_tts_audio(pcm, 16_000)
    stream.push_tts_audio(np.full(16_000, 7.0, np.float32), 16_000)  # clipped to full scale
    stream.push_tts_audio(np.zeros(0, np.float32), 16_000)  # empty: ignored
    stream.end_utterance()
    jobs = run(stream, 60)
    audio = np.concatenate([j.audio for j in jobs])
    assert np.isfinite(audio.astype(np.float64)).all()
    assert int(np.abs(audio).max()) <= 32767
    assert emotion_roundtrip(stream)


def emotion_roundtrip(stream: AvatarStream) -> bool:
    stream.set_emotion("happy", 0.8)
    with pytest.raises(ValueError):
        stream.set_emotion("furious", 1.0)
    with pytest.raises(AvatarStreamError):
        stream.set_emotion("sad", 3.0)
    return True


async def test_outlet_drops_released_but_unsent_audio_on_interrupt() -> None:
    from av import VideoFrame

    from realtime.media.tracks import MediaOutlet

    stream = AvatarStream(CHANNELS, fps=25)
    stream.push_tts_audio(np.full(48_000, 0.5, np.float32), 48_000)
    stream.end_utterance()
    outlet = MediaOutlet(25, 48_000)
    outlet.t0 = 0.0  # a clock long started: packets are due at once
    image = VideoFrame(16, 16, "yuv420p")
    for _ in range(4):  # frames 0..3 released: 160 ms of audio
        outlet.release(stream.next_frame_job(), image)
    first = await outlet.audio_packet(0)
    assert np.abs(first).max() > 10_000  # sent before the interrupt: speech
    dropped = outlet.drop_pending_audio()
    assert dropped == 4 * 1920 - 960
    for j in range(1, 8):
        assert not (await outlet.audio_packet(j)).any()  # released but unsent: now silent


async def test_outlet_silences_frames_in_render_when_interrupted() -> None:
    """A frame whose job was taken before the interrupt (its render in flight) is released after it:
    its audio must leave silent too, and audio of frames made after the interrupt plays again."""
    from av import VideoFrame

    from realtime.media.tracks import MediaOutlet

    stream = AvatarStream(CHANNELS, fps=25)
    outlet = MediaOutlet(25, 48_000)

    def on_event(event: Event) -> None:  # as the session does
        if isinstance(event, Interrupted):
            outlet.drop_pending_audio(until_frame=event.frame)

    stream.add_listener(on_event)
    stream.push_tts_audio(np.full(48_000, 0.5, np.float32), 48_000)
    stream.end_utterance()
    outlet.t0 = 0.0
    image = VideoFrame(16, 16, "yuv420p")
    outlet.release(stream.next_frame_job(), image)  # frame 0 released
    in_flight = [stream.next_frame_job(), stream.next_frame_job()]  # frames 1, 2 being rendered
    assert all(j.audio.any() for j in in_flight)
    stream.interrupt()
    for job in in_flight:
        outlet.release(job, image)
    stream.push_tts_audio(np.full(4_800, 0.5, np.float32), 48_000)  # a new reply after the interrupt
    stream.end_utterance()
    outlet.release(stream.next_frame_job(), image)  # frame 3
    packets = [await outlet.audio_packet(j) for j in range(8)]
    assert all(not p.any() for p in packets[:6])  # frames 0-2: 0 released, 1-2 in render, all unsent
    assert packets[6].any() and packets[7].any()  # frame 3 plays


def test_late_chunks_of_an_interrupted_reply_are_dropped(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    half = len(sentence.pcm) // 2
    stream.push_tts_audio(sentence.pcm[:half], sentence.sample_rate, reply="reply-1")
    run(stream, 10)
    stream.interrupt()
    # the rest of the interrupted reply was still in flight in the pipeline: it must not play
    stream.push_tts_audio(sentence.pcm[half:], sentence.sample_rate, reply="reply-1")
    stream.end_utterance()
    assert all(not j.audio.any() for j in run(stream, 40))
    # a new reply plays
    stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments, reply="reply-2")
    stream.end_utterance()
    assert any(j.audio.any() for j in run(stream, 40))


def test_a_new_reply_closes_the_previous_one(sentence: SpeechChunk) -> None:
    stream = AvatarStream(CHANNELS, fps=25)
    stream.push_tts_audio(sentence.pcm, sentence.sample_rate, sentence.alignments, reply="a")
    stream.push_tts_audio(
        sentence.pcm, sentence.sample_rate, sentence.alignments, reply="b"
    )  # no end for "a"
    assert stream.pending_utterances == 2

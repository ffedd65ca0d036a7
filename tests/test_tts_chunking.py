"""Clause chunking of Piper TTS for real time (engines/tts.py): the splitter, silence trimming, offsets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engines.a2v.visemes import ARKIT_SLICE, SPEECH_INDEX, VISEME_SLICE, AlignmentTrack
from engines.tts import (
    FIRST_MAX_WORDS,
    LONG_WORD_CHARS,
    SILENCE_LEVEL,
    Alignment,
    PiperTTS,
    SpeechChunk,
    SynthesisOptions,
    ends_sentence,
    split_text,
    trim_silence,
)
from realtime.media.stream import AvatarStream

LONG = (
    "This is a long answer that I will not get to finish, because you are going to interrupt me "
    "somewhere in the middle of it, which is fine."
)


# --- split_text --------------------------------------------------------------------------------------
def _words(pieces: list[str]) -> list[int]:
    return [len(p.split()) for p in pieces]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Hello there!", ["Hello there!"]),
        ("Yes.", ["Yes."]),
        (
            "I am a Gaussian splat avatar, and I talk to you in real time.",
            ["I am a Gaussian splat avatar,", "and I talk to you in real time."],
        ),
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        # a clause mark splits when both sides have MIN_WORDS words (to the sentence end)
        ("First part; second part: third part.", ["First part; second part: third part."]),
        ("One two; three four: five six seven.", ["One two; three four:", "five six seven."]),
        (
            "One two three; four five six: seven eight nine.",
            ["One two three;", "four five six:", "seven eight nine."],
        ),
        ("Well, hi.", ["Well, hi."]),  # a one-word clause is not worth a Piper call of its own
        ('He said "stop!" and left.', ['He said "stop!"', "and left."]),  # mark inside closing quotes
        ("It costs one \u2014 maybe two \u2014 euros.", ["It costs one \u2014", "maybe two \u2014 euros."]),
        ("Hello there, you.", ["Hello there, you."]),
    ],
)
def test_split_at_clause_and_sentence_marks(text: str, pieces: list[str]) -> None:
    assert split_text(text) == pieces


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith and Mr. Jones met at St. Paul's.",
        "We met e.g. at noon, i.e. late.",
        "J. R. R. Tolkien wrote it.",
        "It opens at 9 a.m. sharp.",
    ],
)
def test_abbreviations_and_initials_end_no_piece(text: str) -> None:
    pieces = split_text(text, first_max_words=None)
    assert all(
        not p.split()[-1].lower().rstrip(".").endswith(("dr", "mr", "st", "e.g", "i.e", "j", "r", "a.m"))
        for p in pieces
    )
    assert " ".join(pieces) == text


def test_marks_inside_numbers_never_split() -> None:
    text = "Pi is 3.14159 and 1,000,000 is big at 10:30 today."
    assert split_text(text, first_max_words=None) == [text]


def test_first_piece_is_cut_short_before_a_conjunction() -> None:
    pieces = split_text(LONG)
    assert pieces[0] == "This is a long answer"  # cut before "that", not after 8 words
    assert pieces[1] == "that I will not get to finish,"
    assert " ".join(pieces) == LONG


def test_forced_cut_without_conjunction_is_at_the_limit() -> None:
    words = [f"w{i}" for i in range(40)]
    pieces = split_text(" ".join(words) + ".")
    assert _words(pieces)[0] == FIRST_MAX_WORDS
    assert " ".join(pieces) == " ".join(words) + "."


def test_later_pieces_grow_at_most_twice_what_came_before() -> None:
    """The next piece is synthesised before the ones in front of it have played (see _limit)."""
    text = " ".join(f"w{i}" for i in range(100)) + "."
    n = _words(split_text(text, first_max_words=4, max_words=24))
    assert n[0] == 4
    for k in range(1, len(n)):
        assert n[k] <= max(4, 2 * sum(n[:k]))
        assert n[k] <= 24
    assert sum(n) == 100  # every word once


def test_no_limit_keeps_clauses_whole() -> None:
    assert split_text(LONG, first_max_words=None) == [
        "This is a long answer that I will not get to finish,",
        "because you are going to interrupt me somewhere in the middle of it,",
        "which is fine.",
    ]


def test_a_mark_just_past_the_limit_is_worth_waiting_for() -> None:
    text = "one two three four five six seven eight nine, ten eleven twelve."
    assert split_text(text)[0] == "one two three four five six seven eight nine,"


def test_very_long_words_are_never_broken_and_stand_alone() -> None:
    long_word = "x" * (LONG_WORD_CHARS + 60)
    pieces = split_text(f"Visit {long_word} for more, please.")
    assert pieces == ["Visit", long_word, "for more, please."]
    assert split_text(long_word) == [long_word]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_gives_no_pieces(text: str) -> None:
    assert split_text(text) == []


def test_whitespace_is_normalised_and_nothing_is_lost() -> None:
    text = "  Hello,\n  world!  This\tis   fine.  "
    pieces = split_text(text)
    assert " ".join(pieces) == "Hello, world! This is fine."


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        split_text("a b c", first_max_words=0)
    with pytest.raises(ValueError):
        split_text("a b c", max_words=2, min_words=3)


def test_ends_sentence() -> None:
    assert ends_sentence("Hello there!")
    assert ends_sentence('He said "stop."')
    assert not ends_sentence("and I talk,")
    assert not ends_sentence("This is a long answer")
    assert not ends_sentence("I met Dr.")
    assert not ends_sentence("")


# --- trim_silence ------------------------------------------------------------------------------------
def _chunk(lead: int, onset: int, body: int, tail: int, rate: int = 22_050) -> SpeechChunk:
    """^ of ``lead`` samples whose last ``lead - onset`` are already voiced, a body, then $ of silence."""
    rng = np.random.default_rng(0)
    pcm = np.zeros(lead + body + tail, np.float32)  # [N]
    pcm[onset : lead + body] = rng.uniform(0.1, 0.5, lead + body - onset) * rng.choice(
        [-1, 1], lead + body - onset
    )
    alignments = (
        Alignment("^", lead),
        Alignment("h", body // 2),
        Alignment("a", body - body // 2),
        Alignment("$", tail),
    )
    return SpeechChunk(pcm=pcm, sample_rate=rate, alignments=alignments)


def test_trim_cuts_only_silence_and_keeps_alignments_summing_to_the_audio() -> None:
    c = _chunk(lead=1536, onset=800, body=4000, tail=1280)
    keep = round(0.005 * c.sample_rate)
    t = trim_silence(c, head=True, tail=True, keep_s=0.005)
    assert sum(a.num_samples for a in t.alignments) == len(t.pcm)
    assert t.alignments[0] == Alignment("^", 1536 - (800 - keep))  # cut stops keep_s before the onset
    assert t.alignments[-1] == Alignment("$", keep)
    assert [a.phoneme for a in t.alignments] == [a.phoneme for a in c.alignments]
    assert t.alignments[1:-1] == c.alignments[1:-1]
    # the voiced part is bit-identical, and only silent samples were removed
    start = 800 - keep
    np.testing.assert_array_equal(t.pcm[keep : keep + 736 + 4000], c.pcm[800 : 1536 + 4000])
    assert np.abs(c.pcm[:start]).max() <= SILENCE_LEVEL
    assert np.abs(c.pcm[1536 + 4000 + keep :]).max() <= SILENCE_LEVEL


def test_trim_head_only_tail_only_and_nothing_to_trim() -> None:
    c = _chunk(lead=1000, onset=900, body=3000, tail=900)
    head = trim_silence(c, head=True, tail=False)
    assert head.alignments[-1] == c.alignments[-1] and len(head.pcm) < len(c.pcm)
    tail = trim_silence(c, head=False, tail=True)
    assert tail.alignments[0] == c.alignments[0] and tail.pcm[0] == c.pcm[0]
    assert trim_silence(c, head=False, tail=False) is c
    voiced = SpeechChunk(c.pcm, c.sample_rate, (Alignment("h", len(c.pcm)),))  # no ^/$: left alone
    assert trim_silence(voiced, head=True, tail=True) is voiced


def test_trim_fades_the_cut_edges() -> None:
    c = _chunk(lead=2000, onset=2000, body=3000, tail=2000)
    c.pcm[:] = np.where(c.pcm == 0, 1e-4, c.pcm)  # a noise floor below the silence level
    t = trim_silence(c, head=True, tail=True)
    assert t.pcm[0] == 0.0 and abs(t.pcm[-1]) < 1e-4 / 10


# --- alignment offsets across chunks -----------------------------------------------------------------
def _lips(stream: AvatarStream) -> tuple[np.ndarray, set[int]]:
    utt = stream._queue[0]
    return np.stack(utt.lip), set(utt.stress_frames)


def test_chunked_push_places_every_phoneme_at_its_sample_offset() -> None:
    """Clause chunks (each ^ ... $, as Piper makes them) pushed one by one put each phoneme where the
    concatenated audio has it: viseme time fractions, speech activity and stress frames equal those of
    one push of the whole (an offset restarting at 0 per chunk would move them)."""
    rate = 22_050
    rng = np.random.default_rng(1)
    parts = [
        ["^", "h", "ə", "ˈ", "l", "oʊ", ",", "$"],
        ["^", "w", "ˈ", "ɜː", "l", "d", "$"],
        ["^", "ˈ", "b", "aɪ", ".", "$"],
    ]
    chunks: list[tuple[np.ndarray, list[Alignment]]] = []
    for part in parts:
        al = [Alignment(p, int(rng.integers(300, 3000))) for p in part]
        chunks.append((rng.uniform(-0.3, 0.3, sum(a.num_samples for a in al)).astype(np.float32), al))
    channels = ("jawOpen", "mouthFunnel")
    split = AvatarStream(channels)
    for pcm, al in chunks:
        split.push_tts_audio(pcm, rate, al)
    split.end_utterance()
    whole = AvatarStream(channels)
    whole.push_tts_audio(np.concatenate([p for p, _ in chunks]), rate, [a for _, al in chunks for a in al])
    whole.end_utterance()
    lips_split, stress_split = _lips(split)
    lips_whole, stress_whole = _lips(whole)
    total = sum(len(p) for p, _ in chunks)
    assert len(lips_split) == len(lips_whole) == math.ceil(round(total * 48_000 / rate) / 1920)
    assert stress_split == stress_whole and len(stress_whole) == 3
    np.testing.assert_allclose(lips_split[:, VISEME_SLICE], lips_whole[:, VISEME_SLICE], atol=1e-5)
    np.testing.assert_allclose(lips_split[:, SPEECH_INDEX], lips_whole[:, SPEECH_INDEX], atol=1e-5)
    # and the mouth itself differs only by coarticulation across the silent joins
    np.testing.assert_allclose(lips_split[:, ARKIT_SLICE], lips_whole[:, ARKIT_SLICE], atol=0.05)


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS.load(threads=1)


def test_stream_chunks_are_the_pieces_with_exact_alignments(tts: PiperTTS) -> None:
    # Piper samples its durations and voice with noise; without it the pauses at the joins are the
    # same every run (with it, one run in ~6 drew a 686-sample join pause)
    chunks = list(tts.stream(LONG, SynthesisOptions(noise_scale=0.0, noise_w_scale=0.0)))
    pieces = split_text(LONG)
    spans = [c.words for c in chunks]
    assert len(pieces) == 4 and len(set(spans)) == 4
    assert [" ".join(LONG.split()[a:b]) for a, b in dict.fromkeys(s for s in spans if s)] == pieces
    # the first piece comes window by window (its first audio waits for one window), later ones whole
    assert spans.count(spans[0]) >= 2 and len(chunks) == 3 + spans.count(spans[0])
    track = AlignmentTrack(25)
    frames = []
    for c in chunks:
        assert sum(a.num_samples for a in c.alignments) == len(c.pcm)
        frames.append(track.push(c.alignments, c.sample_rate, num_samples=len(c.pcm)))
    frames.append(track.flush())
    total = sum(len(c.pcm) for c in chunks)
    assert len(np.concatenate(frames)) == math.ceil(total * 25 / tts.sample_rate)
    # the first chunk starts within a few ms of its voice; the joins inside the sentence are short
    keep = round(0.005 * tts.sample_rate)
    loud = np.flatnonzero(np.abs(chunks[0].pcm) > SILENCE_LEVEL)
    assert loud[0] <= keep + 1
    for c, after in itertools.pairwise(chunks):
        if after.words != c.words:  # a join between pieces
            assert c.alignments[-1].phoneme == "$" and c.alignments[-1].num_samples <= max(keep, 600)


def test_trimming_real_piper_audio_removes_only_silence(tts: PiperTTS) -> None:
    for c in tts.synthesize("I am a Gaussian splat avatar, and I talk to you."):
        t = trim_silence(c, head=True, tail=True)
        head_cut = c.alignments[0].num_samples - t.alignments[0].num_samples
        tail_cut = c.alignments[-1].num_samples - t.alignments[-1].num_samples
        assert head_cut > 0
        assert np.abs(c.pcm[:head_cut]).max() <= SILENCE_LEVEL
        assert tail_cut == 0 or np.abs(c.pcm[len(c.pcm) - tail_cut :]).max() <= SILENCE_LEVEL
        np.testing.assert_array_equal(t.pcm[200:-200], c.pcm[head_cut + 200 : len(c.pcm) - tail_cut - 200])


async def test_tts_service_starts_a_new_reply_short_and_continues_one_whole(tts: PiperTTS) -> None:
    """The Pipecat TTS (say, conversation, bot): a new context_id starts with the short first piece and
    no lead silence; another sentence of the same reply is split at its clauses only and keeps its lead
    (the pause after the sentence before it). Each frame's alignments cover exactly its audio."""
    from typing import cast

    from engines.stt import WhisperSTT
    from realtime.conversation.services import AlignedPiperTTSService, AlignedTTSAudioRawFrame, SpeechModels

    service = AlignedPiperTTSService(SpeechModels(stt=cast(WhisperSTT, None), tts=tts))  # TTS only
    keep = round(0.005 * tts.sample_rate)
    replies = []
    for context in ("reply-1", "reply-1", "reply-2"):
        frames = [f async for f in service.run_tts(LONG, context)]
        assert all(isinstance(f, AlignedTTSAudioRawFrame) for f in frames)
        audio = [cast(AlignedTTSAudioRawFrame, f) for f in frames]
        for f in audio:
            assert sum(a.num_samples for a in f.alignments) == len(f.audio) // 2
        replies.append(audio)
    # a new reply's first piece comes in decoder windows (more frames than pieces); a continuation does not
    assert len(replies[0]) > len(split_text(LONG)) and len(replies[2]) > len(split_text(LONG))
    assert len(replies[1]) == len(split_text(LONG, None))

    def lead(frame: AlignedTTSAudioRawFrame) -> int:
        pcm = np.frombuffer(frame.audio, np.int16).astype(np.float32) / 32767.0
        return int(np.flatnonzero(np.abs(pcm) > SILENCE_LEVEL)[0])

    assert lead(replies[0][0]) <= keep + 1 and lead(replies[2][0]) <= keep + 1
    assert lead(replies[1][0]) > 2 * keep


async def test_tts_service_reports_each_chunks_cpu_time(tts: PiperTTS) -> None:
    """The server's tts_cpu stage: the TTS thread's CPU time of every chunk it synthesised, one report each."""
    from typing import cast

    from engines.stt import WhisperSTT
    from realtime.conversation.services import AlignedPiperTTSService, SpeechModels

    reports: list[float] = []
    service = AlignedPiperTTSService(
        SpeechModels(stt=cast(WhisperSTT, None), tts=tts, tts_cpu=reports.append)
    )
    frames = [f async for f in service.run_tts(LONG, "reply-1")]
    assert len(reports) == len(frames) > len(split_text(LONG))  # the first piece in decoder windows
    assert all(ms > 0.0 for ms in reports)  # Piper's work is CPU work: never reported as nothing


async def test_a_replys_speech_ahead_of_what_plays_is_made_in_the_background(
    tts: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new reply's first chunk at the TTS thread's own priority (the user waits for it); every chunk
    after it, and a continuing sentence's chunks (made while the reply's earlier audio plays), in the
    background (:func:`realtime.media.cpu_priority.background_thread`)."""
    import os
    import threading
    from collections.abc import Iterator
    from typing import cast

    from engines.stt import WhisperSTT
    from realtime.conversation.services import AlignedPiperTTSService, SpeechModels
    from realtime.media import cpu_priority

    if not cpu_priority._lowering_allowed():
        pytest.skip("this process may not lower a thread's nice value again (no CAP_SYS_NICE)")
    if os.getpriority(os.PRIO_PROCESS, 0) + cpu_priority.BACKGROUND_STEP > 19:
        pytest.skip("the tests run too near the lowest priority to see a step down")
    real = tts.stream
    seen: list[int] = []  # the synthesising thread's nice value as each chunk is made

    def stream(*args: object, **kwargs: object) -> Iterator[object]:
        for chunk in real(*args, **kwargs):  # type: ignore[arg-type]
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            yield chunk

    monkeypatch.setattr(tts, "stream", stream)
    service = AlignedPiperTTSService(SpeechModels(stt=cast(WhisperSTT, None), tts=tts))
    new = [f async for f in service.run_tts(LONG, "reply-1")]
    first, *later = seen
    assert len(new) == len(seen) > 1
    assert later == [first + cpu_priority.BACKGROUND_STEP] * len(later)
    seen.clear()
    continued = [f async for f in service.run_tts(LONG, "reply-1")]
    assert seen == [first + cpu_priority.BACKGROUND_STEP] * len(continued)

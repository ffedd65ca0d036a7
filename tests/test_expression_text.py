"""Emotion from text: the VADER-based classifier, mood across a reply, the LLM tag protocol and stripper."""

from __future__ import annotations

import pytest

from engines.expression.emotions import EMOTIONS, EmotionCue, EmotionError, check_emotion
from engines.expression.tags import (
    MAX_TAG_CHARS,
    EmotionTag,
    TagStripper,
    first_cue,
    parse_tag,
    split_tags,
    tag_instruction,
)
from engines.expression.text_emotion import ReplyEmotion, TextEmotionClassifier


@pytest.fixture(scope="module")
def clf() -> TextEmotionClassifier:
    return TextEmotionClassifier().load()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("I'm so happy to see you again, this is wonderful!", "happy"),
        ("Thank you, that's a lovely idea.", "happy"),
        ("I'm sorry, your flight was cancelled and the bags are lost.", "sad"),
        ("Unfortunately, the shop is closed.", "sad"),
        ("That is not good at all.", "sad"),  # negation
        ("Wow, I can't believe it!", "surprised"),
        ("Really? You climbed it in one day?", "surprised"),
        ("Hmm, let me think about that for a second.", "thinking"),
        ("I'm not sure it works that way.", "thinking"),
        ("The train leaves at five from platform two.", "neutral"),
        ("", "neutral"),
    ],
)
def test_sentences_map_to_the_emotion_they_read_as(clf: TextEmotionClassifier, text: str, name: str) -> None:
    cue = clf.classify(text)
    assert cue.name == name, cue
    assert cue.source == "text"
    assert (cue.intensity > 0) == (name != "neutral")


def test_intensity_grows_with_valence_and_exclamation(clf: TextEmotionClassifier) -> None:
    mild = clf.classify("That is a nice plan.")
    strong = clf.classify("That is an absolutely wonderful, amazing, beautiful plan!")
    assert mild.name == strong.name == "happy"
    assert strong.intensity > mild.intensity + 0.2
    assert clf.classify("Oh no, that is terrible news.").valence < -0.4
    # a clearly negative sentence stays sad even with a surprise cue in it
    assert clf.classify("Oh my, that is a horrible, tragic accident.").name == "sad"


def test_reply_mood_carries_into_neutral_sentences_then_fades(clf: TextEmotionClassifier) -> None:
    reply = ReplyEmotion(clf)
    first = reply.next("That's wonderful news, congratulations!")
    second = reply.next("The meeting is at five.")
    assert first.name == second.name == "happy"
    assert second.intensity == pytest.approx(first.intensity * 0.5)
    later = [reply.next("It is on the second floor.") for _ in range(3)]
    assert later[-1].name == "neutral"  # halved each plain sentence until under the floor
    assert all(c.name == "neutral" or c.intensity < second.intensity for c in later)
    reply.reset()
    assert reply.next("The meeting is at five.").name == "neutral"


def test_a_tag_wins_over_the_text(clf: TextEmotionClassifier) -> None:
    reply = ReplyEmotion(clf)
    tag = EmotionCue("sad", 0.6, "tag")
    assert reply.next("What a wonderful day!", tag) is tag
    assert reply.next("The meeting is at five.").name == "sad"  # the tagged mood carries too


def test_emotion_cue_checks_its_fields() -> None:
    with pytest.raises(EmotionError, match="unknown emotion"):
        EmotionCue("angry", 0.5, "text")
    with pytest.raises(EmotionError, match=r"0\.\.1"):
        EmotionCue("happy", 1.5, "text")
    with pytest.raises(EmotionError, match="source"):
        EmotionCue("happy", 0.5, "vibes")
    assert check_emotion(" Happy ") == "happy"
    assert EmotionCue("sad", 0.25, "tag", -0.5).as_event() == {
        "name": "sad",
        "intensity": 0.25,
        "source": "tag",
        "valence": -0.5,
    }


# --- tags -------------------------------------------------------------------------------------------


def test_instruction_names_every_emotion() -> None:
    text = tag_instruction()
    assert all(f"[{e}]" in text for e in EMOTIONS)


@pytest.mark.parametrize(
    ("raw", "name", "intensity"),
    [
        ("[happy]", "happy", 0.7),
        ("[ Sad ]", "sad", 0.7),
        ("[happy 0.4]", "happy", 0.4),
        ("[sad:60%]", "sad", 0.6),
        ("[surprised=1]", "surprised", 1.0),
        ("[excited]", "happy", 0.7),
        ("[curious]", "thinking", 0.7),
        ("[neutral]", "neutral", 0.0),
        ("[very happy]", "happy", 0.7),
    ],
)
def test_parse_tag_understands_names_synonyms_and_levels(raw: str, name: str, intensity: float) -> None:
    tag = parse_tag(raw)
    assert tag is not None and tag.cue is not None
    assert (tag.cue.name, tag.cue.intensity, tag.cue.source) == (name, pytest.approx(intensity), "tag")


def test_parse_tag_unknown_word_is_a_tag_without_emotion_and_non_tags_are_none() -> None:
    unknown = parse_tag("[grumpy]")
    assert unknown == EmotionTag(None, "[grumpy]")
    for not_a_tag in ("[1]", "[2023 report]", "[a, b]", "[]", "[this is far too long to be a tag at all]"):
        assert parse_tag(not_a_tag) is None, not_a_tag


def _stream(pieces: list[str]) -> list[str | EmotionTag]:
    s = TagStripper()
    out: list[str | EmotionTag] = []
    for p in pieces:
        out += s.feed(p)
    return out + s.flush()


def _text(pieces: list[str | EmotionTag]) -> str:
    return "".join(p for p in pieces if isinstance(p, str))


def test_tags_split_across_tokens_are_stripped_and_never_spoken() -> None:
    out = _stream(["[hap", "py", "] Great", " news! [", "sad 0.4", "]But the", " shop closed."])
    assert _text(out) == "Great news! But the shop closed."
    assert "[" not in _text(out) and "happy" not in _text(out) and "sad" not in _text(out)
    cues = [p.cue for p in out if isinstance(p, EmotionTag)]
    assert [(c.name, c.intensity) for c in cues if c] == [("happy", 0.7), ("sad", 0.4)]
    # order: the tag comes before the text it belongs to
    assert isinstance(out[0], EmotionTag) and isinstance(out[1], str)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_stripping_does_not_depend_on_how_the_stream_is_cut(chunk: int) -> None:
    text = "[happy]Hello there![thinking] Hmm, see [1] and [grumpy]x [unclosed and more"
    whole = _text(_stream([text]))
    cut = _text(_stream([text[i : i + chunk] for i in range(0, len(text), chunk)]))
    assert cut == whole == "Hello there! Hmm, see [1] and x [unclosed and more"


def test_a_tag_between_words_leaves_one_space() -> None:
    assert _text(_stream(["Great![happy]Wow"])) == "Great! Wow"
    assert _text(_stream(["Great! [happy] Wow"])) == "Great! Wow"


def test_text_after_a_long_bracket_is_released_not_held() -> None:
    s = TagStripper()
    out = s.feed("[" + "x" * (MAX_TAG_CHARS + 5))
    assert _text(out).startswith("[xxx") and not s.holding
    s2 = TagStripper()
    assert s2.feed("Hello [ha") == ["Hello "] and s2.holding  # held until it is decided


def test_split_tags_and_first_cue() -> None:
    clean, tags = split_tags("[thinking] Let me see. [sorry] I can't.")
    assert clean == "Let me see. I can't."
    cue = first_cue(tags)
    assert cue is not None and cue.name == "thinking"
    assert first_cue(split_tags("[grumpy] no known tag")[1]) is None
    assert split_tags("no tags at all") == ("no tags at all", [])

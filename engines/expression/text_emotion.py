"""Emotion from a sentence's text, offline: VADER valence plus small cue lists, mapped to our emotions.

VADER (``vaderSentiment``, MIT licence; its 7 500-word valence lexicon and
emoji lexicon ship inside the wheel, nothing is fetched) scores a sentence's
valence from -1 to 1 with negation, intensifiers, "but" and exclamation marks
taken into account. Our five emotions need more than valence, so two short
cue lists of our own add the rest:

* **surprised**: interjections and phrases of surprise (``wow``, ``no way``,
  ``I can't believe``, ``really?``), unless the sentence is clearly negative
  (``oh no, that's terrible`` reads as sad);
* **thinking**: hedges and deliberation (``hmm``, ``let me think``, ``I'm not
  sure``, ``it depends``, ``perhaps``), when the valence is mild.

Otherwise valence decides: ``compound >= 0.25`` is happy, ``<= -0.25`` sad,
with intensity growing linearly from 0.35 at the threshold to 1 at ±0.9; an
exclamation mark adds 0.1. Everything else is neutral.

:class:`ReplyEmotion` follows a reply sentence by sentence: a sentence with
an LLM tag takes the tag, one without is classified, and a neutral sentence
after an emotional one keeps half of the mood (a reply that starts with
good news does not snap back to a blank face on its next plain sentence).

Example::

    clf = TextEmotionClassifier()
    clf.classify("I'm so happy for you!")          # EmotionCue('happy', 0.9, 'text', 0.68)
    reply = ReplyEmotion(clf)
    reply.next("That's wonderful news!")           # happy
    reply.next("The meeting is at five.")          # happy, half as strong (mood carried)
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from engines.expression.emotions import EmotionCue

logger = logging.getLogger(__name__)

VALENCE_THRESHOLD = 0.25  # |VADER compound| at which a sentence counts as happy / sad
VALENCE_FULL = 0.9  # ... and at which its intensity reaches 1
MIN_INTENSITY = 0.35  # intensity right at the threshold
EXCLAMATION_BONUS = 0.1
SURPRISE_INTENSITY = 0.7
THINKING_INTENSITY = 0.6
HEDGE_INTENSITY = 0.4  # "perhaps", "maybe": a lighter thinking look
THINKING_MAX_VALENCE = 0.5  # a hedge inside a clearly happy/sad sentence does not make it "thinking"
MOOD_CARRY = 0.5  # a neutral sentence keeps this fraction of the previous sentence's emotion
MOOD_FLOOR = 0.15  # a carried mood weaker than this is neutral
TAG_DEFAULT_INTENSITY = 0.7  # an LLM tag without an intensity

_SURPRISE = re.compile(
    r"\b(wow+|whoa+|woah+|oh my|no way|unbelievabl[ey]|can'?t believe|cannot believe|"
    r"what a surprise|had no idea|surpris(e|ed|ing|ingly)|astonish\w*|shock(ed|ing)|"
    r"(really|seriously)\s*\?)"
    r"|\?!|!\?",
    re.IGNORECASE,
)
_THINKING = re.compile(
    r"\b(hmm+|hm+|let me (think|see)|let's see|i wonder|good question|"
    r"(i'?m|i am) (not (entirely |quite |really )?sure|unsure|thinking)|not (entirely |quite )?sure|"
    r"it depends|on the other hand|i('d| would) have to think|tricky question)\b",
    re.IGNORECASE,
)
_HEDGE = re.compile(r"\b(perhaps|maybe|possibly|probably|i think|i guess|i suppose)\b", re.IGNORECASE)


class TextEmotionClassifier:
    """Sentence → :class:`EmotionCue` (source ``"text"``); see the module docstring.

    The VADER lexicon (~0.5 MB of text) is read once, on the first call or at
    :meth:`load`; after that :meth:`classify` only reads it and takes a few
    tens of microseconds a sentence, so one instance can serve every session.
    """

    def __init__(self) -> None:
        self._analyzer: Any = None
        self._lock = threading.Lock()

    def load(self) -> TextEmotionClassifier:
        """Read the lexicon now (else on the first :meth:`classify`)."""
        with self._lock:
            if self._analyzer is None:
                try:
                    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
                except ImportError as exc:  # pragma: no cover - a core dependency
                    raise RuntimeError(
                        "vaderSentiment is not installed: pip install 'vadersentiment==3.3.2'"
                    ) from exc
                self._analyzer = SentimentIntensityAnalyzer()
        return self

    def valence(self, text: str) -> float:
        """VADER's compound score of ``text``: -1 (very negative) .. 1 (very positive)."""
        if self._analyzer is None:
            self.load()
        return float(self._analyzer.polarity_scores(text)["compound"])

    def classify(self, sentence: str) -> EmotionCue:
        text = " ".join(str(sentence).split())
        if not text:
            return EmotionCue("neutral", 0.0, "text")
        c = self.valence(text)
        exclaim = EXCLAMATION_BONUS if "!" in text else 0.0
        if _SURPRISE.search(text) and c > -VALENCE_THRESHOLD:
            return EmotionCue("surprised", min(1.0, SURPRISE_INTENSITY + exclaim + 0.2 * abs(c)), "text", c)
        if abs(c) >= VALENCE_THRESHOLD:
            span = (abs(c) - VALENCE_THRESHOLD) / (VALENCE_FULL - VALENCE_THRESHOLD)
            intensity = min(1.0, MIN_INTENSITY + (1.0 - MIN_INTENSITY) * span + exclaim)
            return EmotionCue("happy" if c > 0 else "sad", intensity, "text", c)
        if abs(c) < THINKING_MAX_VALENCE:
            if _THINKING.search(text):
                return EmotionCue("thinking", THINKING_INTENSITY, "text", c)
            if _HEDGE.search(text):
                return EmotionCue("thinking", HEDGE_INTENSITY, "text", c)
        return EmotionCue("neutral", 0.0, "text", c)


class ReplyEmotion:
    """The emotion of each sentence of one reply, in order; see the module docstring.

    One instance per reply (or call :meth:`reset` when a new reply starts).
    """

    def __init__(self, classifier: TextEmotionClassifier, carry: float = MOOD_CARRY) -> None:
        if not 0.0 <= carry <= 1.0:
            raise ValueError(f"carry must be in 0..1, got {carry}")
        self._classifier = classifier
        self._carry = carry
        self._mood: EmotionCue | None = None

    def reset(self) -> None:
        self._mood = None

    def next(self, sentence: str, tag: EmotionCue | None = None) -> EmotionCue:
        """The emotion of the next sentence: its tag when it has one, else its text (mood carried)."""
        if tag is not None:
            self._mood = tag
            return tag
        cue = self._classifier.classify(sentence)
        mood = self._mood
        if cue.name == "neutral" and mood is not None and mood.name != "neutral":
            carried = mood.intensity * self._carry
            if carried >= MOOD_FLOOR:
                cue = EmotionCue(mood.name, carried, "text", cue.valence)
        self._mood = cue
        return cue

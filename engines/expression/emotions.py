"""The emotion vocabulary shared by the classifier, the tag protocol, the motion layers and the API."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Every emotion the face can show, in the order the motion layers' overlay table uses.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprised", "thinking")

#: Where an emotion came from: the API (explicit, wins while set), an LLM tag, or text analysis.
SOURCES: tuple[str, ...] = ("api", "tag", "text")


class EmotionError(ValueError):
    """An emotion name or intensity is not one we know."""


@dataclass(frozen=True)
class EmotionCue:
    """An emotion for a stretch of speech (a sentence), and why."""

    name: str  # one of EMOTIONS
    intensity: float  # 0..1
    source: str  # one of SOURCES
    valence: float = 0.0  # the text's valence -1..1 (VADER compound; 0 when unknown)
    text: str = ""  # the sentence it is for (reported with the event), when known

    def __post_init__(self) -> None:
        if self.name not in EMOTIONS:
            raise EmotionError(f"unknown emotion {self.name!r}; choose one of {', '.join(EMOTIONS)}")
        if not (isinstance(self.intensity, int | float) and 0.0 <= self.intensity <= 1.0):
            raise EmotionError(f"emotion intensity must be in 0..1, got {self.intensity!r}")
        if self.source not in SOURCES:
            raise EmotionError(f"unknown emotion source {self.source!r}; one of {', '.join(SOURCES)}")
        if not math.isfinite(self.valence):
            raise EmotionError(f"valence must be finite, got {self.valence!r}")

    def as_event(self) -> dict[str, object]:
        """The JSON-able fields of an ``emotion`` event on the session's websocket."""
        event: dict[str, object] = {
            "name": self.name,
            "intensity": round(float(self.intensity), 3),
            "source": self.source,
            "valence": round(float(self.valence), 3),
        }
        if self.text:
            event["text"] = self.text
        return event


def check_emotion(name: str) -> str:
    """``name`` normalised (stripped, lower case) when it is an emotion; EmotionError otherwise."""
    key = str(name).strip().lower()
    if key not in EMOTIONS:
        raise EmotionError(f"unknown emotion {name!r}; choose one of {', '.join(EMOTIONS)}")
    return key

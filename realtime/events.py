"""The events a session publishes: one frozen dataclass per kind, serialised in one place.

Producers: :class:`realtime.media.stream.AvatarStream` (state, interrupted,
utterance_*, emotion), the conversation loop (user_speaking, transcript,
error) and the session (connection, stats, lip_latency, closed). Listeners
receive these objects and match them with ``isinstance``; the events
websocket sends :meth:`Event.to_json` as one JSON object per message, and
``/openapi.json`` describes every kind (:func:`event_schemas`).

Add a kind: subclass :class:`Event` as a frozen dataclass with a ``type``
class variable (its name on the wire) and typed fields (``bool``, ``int``,
``float``, ``str``, a ``Literal`` of strings, or one of these ``| None``);
it registers itself, and its JSON schema follows from the fields. A field
that is ``None`` is left out of the JSON.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin

AvatarState = Literal["idle", "speaking", "listening"]
Role = Literal["user", "assistant"]
Stage = Literal["stt", "llm", "tts", "avatar", "pipeline"]
EmotionSource = Literal["api", "tag", "text"]

EVENT_TYPES: dict[str, type[Event]] = {}  # wire name → class, filled as classes are defined


@dataclass(frozen=True)
class Event:
    """Base of every event; ``type`` is the kind's name on the wire."""

    type: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.type:
            raise TypeError(f"{cls.__name__} needs a 'type' class variable (its name on the wire)")
        if cls.type in EVENT_TYPES:
            raise TypeError(f"event type {cls.type!r} is taken by {EVENT_TYPES[cls.type].__name__}")
        EVENT_TYPES[cls.type] = cls

    def to_json(self) -> dict[str, Any]:
        """``{"type": ..., field: value, ...}`` (fields that are None left out)."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out


# --- the avatar (AvatarStream) -----------------------------------------------------------------------
@dataclass(frozen=True)
class StateChanged(Event):
    """The avatar started speaking, listening or idling (as its media clock plays the audio)."""

    type: ClassVar[str] = "state"
    state: AvatarState


@dataclass(frozen=True)
class Interrupted(Event):
    """Pending speech was dropped at frame ``frame`` (the first frame made after the interrupt)."""

    type: ClassVar[str] = "interrupted"
    frame: int
    had_speech: bool


@dataclass(frozen=True)
class UtteranceQueued(Event):
    """The first TTS audio of a reply arrived; ``ahead`` replies wait before it."""

    type: ClassVar[str] = "utterance_queued"
    frame: int
    ahead: int


@dataclass(frozen=True)
class UtteranceStarted(Event):
    """A reply's first frame: ``frame``; ``aligned``: the mouth follows TTS alignments (else the a2v net)."""

    type: ClassVar[str] = "utterance_start"
    frame: int
    aligned: bool


@dataclass(frozen=True)
class UtteranceDone(Event):
    """A reply's last frame: ``frame``."""

    type: ClassVar[str] = "utterance_done"
    frame: int


@dataclass(frozen=True)
class EmotionChanged(Event):
    """The face's emotion: set through the API (``source`` api; ``name`` auto: back to inferred ones), or
    inferred for a sentence as it starts to play (``source`` tag: the LLM's tag, text: its words;
    ``applied`` false while the API's emotion holds or expressiveness is 0)."""

    type: ClassVar[str] = "emotion"
    name: str
    intensity: float
    source: EmotionSource | None = None
    valence: float | None = None  # the sentence's VADER valence -1..1
    text: str | None = None  # the sentence
    applied: bool | None = None


# --- the conversation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserSpeaking(Event):
    type: ClassVar[str] = "user_speaking"
    speaking: bool


@dataclass(frozen=True)
class Transcript(Event):
    """The user's whole turn as the brain gets it, or one assistant sentence handed to the avatar."""

    type: ClassVar[str] = "transcript"
    role: Role
    text: str


@dataclass(frozen=True)
class Error(Event):
    """A stage failed for one turn (the session goes on), or a websocket command was refused (no stage).

    A failed frame pacer ends its session: ``stage`` ``avatar``, then ``closed``.
    """

    type: ClassVar[str] = "error"
    message: str
    stage: Stage | None = None


# --- the session --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionChanged(Event):
    """The peer connection's state (new, connecting, connected, disconnected, failed, closed)."""

    type: ClassVar[str] = "connection"
    state: str


@dataclass(frozen=True)
class Stats(Event):
    """Once a second while a websocket listens."""

    type: ClassVar[str] = "stats"
    frames: int
    repeated: int  # frames sent with an older image (a late render, or skipped by the ladder's last rung)
    ladder_level: int
    video_sent: int
    audio_gap_packets: int
    utterances: int
    underrun_samples: int
    state: AvatarState
    video_kbps: int | None = None  # the bitrate the video encoder runs at (the receiver's estimate)
    video_psnr_db: float | None = None  # mean luma PSNR of the frames encoded since the last stats
    video_keyframes: int = 0  # keyframes sent so far (first frame, receiver's requests, bitrate changes)


@dataclass(frozen=True)
class LipLatency(Event):
    """A reply's first TTS audio in → its first frame released to the tracks, in ms."""

    type: ClassVar[str] = "lip_latency"
    frame: int
    ms: float


@dataclass(frozen=True)
class Closed(Event):
    """The session ended; the websocket closes after this."""

    type: ClassVar[str] = "closed"


# --- schemas ------------------------------------------------------------------------------------------
def _schema(hint: Any) -> dict[str, Any]:
    if isinstance(hint, types.UnionType) or get_origin(hint) is typing.Union:
        options = [_schema(a) for a in get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if get_origin(hint) is Literal:
        return {"enum": list(get_args(hint))}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"no JSON schema for an event field of type {hint!r}")


def event_schema(cls: type[Event]) -> dict[str, Any]:
    """The JSON schema of one event kind, from its dataclass fields."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {"type": {"const": cls.type}}
    required = ["type"]
    for f in dataclasses.fields(cls):
        properties[f.name] = _schema(hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        schema["description"] = " ".join(cls.__doc__.split())
    return schema


def event_schemas() -> dict[str, dict[str, Any]]:
    """``{"Event<Name>": schema}`` for every registered kind (for ``/openapi.json``)."""
    return {f"Event{cls.__name__}": event_schema(cls) for cls in EVENT_TYPES.values()}

"""Typed events: one frozen dataclass per kind, one wire format, one schema per kind in /openapi.json."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

import pytest

from realtime.events import (
    EVENT_TYPES,
    Closed,
    Error,
    Event,
    Interrupted,
    Stats,
    Transcript,
    event_schema,
)
from realtime.web.openapi import openapi_spec

WIRE_TYPES = {
    "state", "interrupted", "utterance_queued", "utterance_start", "utterance_done", "emotion",
    "user_speaking", "transcript", "error", "connection", "stats", "lip_latency", "closed",
}  # fmt: skip


def _example(cls: type[Event]) -> Event:
    """An instance with a value of the right type in every field."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Literal:
            values[f.name] = args[0]
        elif args and typing.get_origin(args[0]) is typing.Literal:
            values[f.name] = typing.get_args(args[0])[0]
        else:
            base = args[0] if args else hint
            values[f.name] = {bool: True, int: 3, float: 1.5, str: "text"}[base]
    return cls(**values)


def _conforms(value: dict[str, Any], schema: dict[str, Any]) -> None:
    assert set(schema["required"]) <= set(value) <= set(schema["properties"])
    kinds = {"boolean": bool, "integer": int, "number": (int, float), "string": str}
    for key, item in value.items():
        prop = schema["properties"][key]
        if "const" in prop:
            assert item == prop["const"]
        elif "enum" in prop:
            assert item in prop["enum"]
        else:
            assert isinstance(item, kinds[prop["type"]]), (key, item, prop)


def test_the_wire_names_are_the_ones_the_client_knows() -> None:
    assert set(EVENT_TYPES) == WIRE_TYPES


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_every_event_serialises_to_its_schema(cls: type[Event]) -> None:
    event = _example(cls)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.type = "other"  # type: ignore[misc]
    if dataclasses.fields(event):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, dataclasses.fields(event)[0].name, None)
    _conforms(event.to_json(), event_schema(cls))


def test_to_json_is_the_websocket_message() -> None:
    assert Interrupted(frame=12, had_speech=True).to_json() == {
        "type": "interrupted",
        "frame": 12,
        "had_speech": True,
    }
    assert Transcript(role="user", text="hi").to_json() == {
        "type": "transcript",
        "role": "user",
        "text": "hi",
    }
    assert Closed().to_json() == {"type": "closed"}
    # an optional field left unset is left out (a refused websocket command has no stage)
    assert Error(message="bad command").to_json() == {"type": "error", "message": "bad command"}
    assert Error(message="boom", stage="tts").to_json() == {
        "type": "error",
        "message": "boom",
        "stage": "tts",
    }


def test_schemas_say_what_is_required() -> None:
    schema = event_schema(Error)
    assert schema["required"] == ["type", "message"]
    assert schema["properties"]["stage"]["enum"] == ["stt", "llm", "tts", "avatar", "pipeline"]
    assert event_schema(Stats)["properties"]["state"] == {"enum": ["idle", "speaking", "listening"]}


def test_openapi_describes_every_event() -> None:
    schemas = openapi_spec()["components"]["schemas"]
    refs = {one["$ref"].rsplit("/", 1)[1] for one in schemas["Event"]["oneOf"]}
    assert refs == {f"Event{cls.__name__}" for cls in EVENT_TYPES.values()}
    for cls in EVENT_TYPES.values():
        assert schemas[f"Event{cls.__name__}"]["properties"]["type"] == {"const": cls.type}


def test_a_kind_needs_a_unique_wire_name() -> None:
    with pytest.raises(TypeError, match="needs a 'type'"):

        @dataclasses.dataclass(frozen=True)
        class Nameless(Event):
            value: int

    with pytest.raises(TypeError, match="taken by Closed"):

        @dataclasses.dataclass(frozen=True)
        class Again(Event):
            type: ClassVar[str] = "closed"
